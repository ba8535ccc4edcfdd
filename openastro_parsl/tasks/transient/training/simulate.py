"""Simulated science/template pairs with known truth: real point sources and bogus features injected into star
fields under drawn observing ``Conditions`` (see the package docstring)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from astropy.io import fits

from ....astro.psf import FWHM_SIGMA, PixelQuadrature, render_moffat_stars
from ....astro.wcs import pixel_scale_arcsec, tan_wcs
from ....datastore.image import MASK_BITS, Image
from ....sim.render import expose

__all__ = ["BOGUS_KINDS", "KIND_CODE", "Conditions", "SimPair", "conditions_from_calexps", "render_stars",
           "simulate_pair"]

BOGUS_KINDS = ("noise", "cosmic_ray", "hot_pixel", "trail", "dipole", "star_residual", "template_artefact",
               "edge")
KIND_CODE = {k: i for i, k in enumerate(("real",) + BOGUS_KINDS)}


@dataclass(frozen=True)
class Conditions:
    """Ranges each simulated frame draws its observing conditions from (uniform, log-uniform for scales)."""

    pixel_scale: tuple[float, float] = (0.35, 2.0)      # arcsec / px, science frame
    seeing_arcsec: tuple[float, float] = (0.9, 4.5)     # science FWHM
    fwhm_px: tuple[float, float] = (1.8, 6.0)           # science FWHM is clipped to this (px)
    depth_mag: tuple[float, float] = (17.5, 21.0)       # science 5-sigma point-source limit
    sky_e: tuple[float, float] = (30.0, 6000.0)         # sky electrons per pixel (log-uniform); with the
                                                        # depth this sets the zero-point
    size: tuple[int, int] = (96, 144)                   # science frame side (px)
    density: tuple[float, float] = (3.0, 30.0)          # stars per arcmin^2 (r < 20)
    template_depth_gain: tuple[float, float] = (1.0, 2.5)  # template deeper by this (mag)
    saturation_fraction: float = 0.5                    # frames with a 65535 ADU full well
    misaligned_fraction: float = 0.2                    # frames whose science WCS is off (dipoles)
    misalign_px: tuple[float, float] = (0.25, 1.0)
    smear_fraction: float = 0.15                        # frames with tracking smear (elongated PSF)
    trail_fraction: float = 0.12                        # frames crossed by a satellite
    partial_template_fraction: float = 0.15             # template covers only part of the frame
    real_per_frame: float = 14.0                        # injected real sources (Poisson mean)
    on_star_fraction: float = 0.15                      # ... of which on top of a star (a flaring/nuclear source)
    fading_fraction: float = 0.1                        # ... of which in the template only (negative difference)
    cosmic_rays_per_frame: float = 5.0
    hot_pixels_per_frame: float = 4.0
    template_artefacts_per_frame: float = 0.6

    def narrowed(self, **kw) -> "Conditions":
        return replace(self, **kw)


@dataclass
class SimPair:
    science: Image
    template: Image
    real: np.ndarray            # (n, 3): x, y, sign (+1 science, -1 template) in science pixels
    real_flux: np.ndarray       # injected flux (science ADU)
    artefacts: list[tuple[str, float, float]]  # (kind, x, y) of point-like bogus features
    trails: list[tuple[float, float, float]]   # (x0, y0, angle) lines in science pixels
    stars_xy: np.ndarray        # (m, 2) catalogue stars in science pixels
    misaligned: bool
    info: dict = field(default_factory=dict)


def _loguniform(rng, lo, hi):
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def render_stars(shape, x, y, flux, fwhm: float, beta: float, chunk: int = 64) -> np.ndarray:
    """Point sources as pixel-integrated Moffats (3x3 Gauss-Legendre), stamps of 4.5 FWHM (at most 30 px).

    The simulator's ``star_image`` with shorter stamps and fewer nodes: training needs thousands of frames,
    and the ~1 % of flux beyond the stamp is the same in every frame (a zero-point offset the kernel absorbs).
    """
    radius = int(np.clip(math.ceil(4.5 * fwhm), 6, 30))
    return render_moffat_stars(shape, x, y, flux, fwhm, beta, radius=radius,
                               quadrature=PixelQuadrature.gauss_legendre(3), chunk=chunk)


def _draw_stars(rng, n_per_arcmin2, half_width_arcsec):
    """Star field: tangent-plane offsets (arcsec) and r magnitudes with rising number counts (11-20.5)."""
    area = (2 * half_width_arcsec / 60.0) ** 2
    n = rng.poisson(n_per_arcmin2 * area)
    lo, hi, slope = 11.0, 20.5, 0.25
    span = 10 ** (slope * (hi - lo)) - 1.0
    mags = lo + np.log10(1.0 + rng.random(n) * span) / slope
    xi = rng.uniform(-half_width_arcsec, half_width_arcsec, n)
    eta = rng.uniform(-half_width_arcsec, half_width_arcsec, n)
    return xi, eta, mags


def _line_image(shape, x0, y0, angle, sigma, amplitude):
    """A straight trail through (x0, y0): Gaussian cross-section, peak ``amplitude``, optionally dashed."""
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    d = -(xx - x0) * math.sin(angle) + (yy - y0) * math.cos(angle)
    return amplitude * np.exp(-0.5 * (d / sigma) ** 2)


def simulate_pair(rng: np.random.Generator, cond: Conditions = Conditions()) -> SimPair:
    """One science frame (calexp-like: ADU with sky, WCS, PHOTZP, FWHMPIX, VARIANCE, MASK) and its template."""
    # --- conditions ---------------------------------------------------------------------------------------
    scale = _loguniform(rng, *cond.pixel_scale)
    n = int(rng.integers(cond.size[0], cond.size[1] + 1))
    shape = (n, n)
    fwhm_px = float(np.clip(_loguniform(rng, *cond.seeing_arcsec) / scale, *cond.fwhm_px))
    beta_s = float(rng.uniform(2.5, 4.5))
    depth = float(rng.uniform(*cond.depth_mag))
    gain, rn = float(rng.uniform(1.0, 2.0)), float(rng.uniform(4.0, 10.0))
    sky_e = _loguniform(rng, *cond.sky_e)
    sig_psf = fwhm_px / FWHM_SIGMA
    sky_sigma_adu = math.sqrt(sky_e + rn**2) / gain
    flux_lim = 5.0 * math.sqrt(4 * math.pi) * sig_psf * sky_sigma_adu
    zp = depth + 2.5 * math.log10(flux_lim)
    saturation = 65535.0 if rng.random() < cond.saturation_fraction else 1e12
    ra0, dec0 = 180.0, float(rng.uniform(-60, 60))
    rot_s, flip_s = float(rng.uniform(0, 360)), bool(rng.random() < 0.5)
    w_true = tan_wcs(ra0, dec0, scale, rot_s, flip_s, shape)

    # template: finer or equal pixels, own orientation, deeper, its own (often mixed) PSF
    t_scale = scale * float(rng.uniform(0.45, 1.0))
    t_n = int(min(1.15 * n * scale / t_scale + 8, 360))
    partial = rng.random() < cond.partial_template_fraction
    off = (rng.uniform(-0.45, 0.45, 2) * t_n) if partial else rng.uniform(-0.03, 0.03, 2) * t_n
    t_shape = (t_n, t_n)
    w_t = tan_wcs(ra0, dec0, t_scale, float(rng.uniform(0, 360)), bool(rng.random() < 0.3), t_shape,
                   crpix_offset=(float(off[0]), float(off[1])))
    t_fwhm_arcsec = fwhm_px * scale * float(_loguniform(rng, 0.55, 1.5))
    t_fwhm1 = max(t_fwhm_arcsec / t_scale, 1.5)
    t_fwhm2 = t_fwhm1 * float(rng.uniform(1.0, 1.6))
    t_mix = float(rng.uniform(0.5, 1.0))
    beta_t = float(rng.uniform(2.5, 4.5))
    t_depth = depth + float(rng.uniform(*cond.template_depth_gain))
    t_sig_psf = t_fwhm1 / FWHM_SIGMA
    t_sigma = 10 ** (-0.4 * (t_depth - 25.0)) / (5.0 * math.sqrt(4 * math.pi) * t_sig_psf)

    # --- stars --------------------------------------------------------------------------------------------
    half_w = 0.8 * max(n * scale, t_n * t_scale)
    xi, eta, mags = _draw_stars(rng, float(rng.uniform(*cond.density)), half_w)
    from ....sim.sky import tangent_to_radec

    sra, sdec = tangent_to_radec(ra0, dec0, xi, eta)
    sx, sy = w_true.wcs_world2pix(sra, sdec, 0)
    tx, ty = w_t.wcs_world2pix(sra, sdec, 0)
    s_flux = 10 ** (-0.4 * (mags - zp))
    t_flux = 10 ** (-0.4 * (mags - 25.0))

    # --- real injections ----------------------------------------------------------------------------------
    n_real = int(rng.poisson(cond.real_per_frame))
    margin = 3.0
    rx = rng.uniform(margin, n - 1 - margin, n_real)
    ry = rng.uniform(margin, n - 1 - margin, n_real)
    noise_psf = sky_sigma_adu * math.sqrt(4 * math.pi) * sig_psf
    r_flux = np.exp(rng.uniform(math.log(4.0), math.log(400.0), n_real)) * noise_psf
    inside = (sx > 0) & (sx < n - 1) & (sy > 0) & (sy < n - 1) & (mags > 13.0)
    on_star = rng.random(n_real) < cond.on_star_fraction
    cand_stars = np.flatnonzero(inside)
    for k in np.flatnonzero(on_star):
        if len(cand_stars) == 0:
            break
        j = int(rng.choice(cand_stars))
        rx[k] = sx[j] + rng.normal(0, 0.15 * fwhm_px)
        ry[k] = sy[j] + rng.normal(0, 0.15 * fwhm_px)
        r_flux[k] = max(r_flux[k], s_flux[j] * float(rng.uniform(0.4, 3.0)))
    sign = np.where(rng.random(n_real) < cond.fading_fraction, -1.0, 1.0)  # fading: in the template only
    rra, rdec = w_true.wcs_pix2world(rx, ry, 0)
    rtx, rty = w_t.wcs_world2pix(rra, rdec, 0)

    # --- science pixels -----------------------------------------------------------------------------------
    pos = sign > 0
    expected_src = render_stars(shape, np.r_[sx, rx[pos]], np.r_[sy, ry[pos]], np.r_[s_flux, r_flux[pos]],
                              fwhm_px, beta_s) * gain
    smear = rng.random() < cond.smear_fraction
    if smear:
        from scipy.ndimage import rotate as ndrotate
        from scipy.signal import fftconvolve

        L = float(rng.uniform(0.6, 1.5)) * fwhm_px
        h = int(math.ceil(L)) + 1
        k = np.zeros((2 * h + 1, 2 * h + 1))
        k[h, h - int(L / 2):h + int(L / 2) + 1] = 1.0
        k = ndrotate(k, float(rng.uniform(0, 180)), reshape=False, order=1)
        k = np.clip(k, 0, None)
        expected_src = fftconvolve(expected_src, k / k.sum(), mode="same")
    expected = sky_e + np.clip(expected_src, 0, None)
    artefacts: list[tuple[str, float, float]] = []
    trails: list[tuple[float, float, float]] = []
    extra = np.zeros(shape)
    # cosmic rays: sharp tracks 1-6 px, not convolved by the PSF
    for _ in range(int(rng.poisson(cond.cosmic_rays_per_frame))):
        x0, y0 = rng.uniform(2, n - 3, 2)
        length = float(rng.uniform(0.5, 6.0))
        ang = float(rng.uniform(0, math.pi))
        amp = float(_loguniform(rng, 8.0, 300.0)) * sky_sigma_adu * gain
        for t in np.linspace(0, length, max(2, int(length * 2) + 1)):
            xx, yy = x0 + t * math.cos(ang), y0 + t * math.sin(ang)
            ix, iy = int(round(xx)), int(round(yy))
            if 0 <= ix < n and 0 <= iy < n:
                extra[iy, ix] = max(extra[iy, ix], amp * float(rng.uniform(0.6, 1.0)))
        artefacts.append(("cosmic_ray", x0 + 0.5 * length * math.cos(ang), y0 + 0.5 * length * math.sin(ang)))
    # hot pixels (one pixel, sometimes a warm neighbour)
    for _ in range(int(rng.poisson(cond.hot_pixels_per_frame))):
        ix, iy = int(rng.integers(1, n - 1)), int(rng.integers(1, n - 1))
        amp = float(_loguniform(rng, 8.0, 400.0)) * sky_sigma_adu * gain
        extra[iy, ix] += amp
        if rng.random() < 0.3:
            extra[iy + int(rng.choice([-1, 1])), ix] += amp * float(rng.uniform(0.1, 0.5))
        artefacts.append(("hot_pixel", float(ix), float(iy)))
    if rng.random() < cond.trail_fraction:
        x0, y0 = rng.uniform(0.2 * n, 0.8 * n, 2)
        ang = float(rng.uniform(0, math.pi))
        amp = float(_loguniform(rng, 3.0, 60.0)) * sky_sigma_adu * gain
        width = sig_psf * float(rng.uniform(0.8, 1.5))
        line = _line_image(shape, x0, y0, ang, width, amp)
        if rng.random() < 0.4:  # dashed / glinting
            yy, xx = np.mgrid[0:n, 0:n].astype(float)
            along = (xx - x0) * math.cos(ang) + (yy - y0) * math.sin(ang)
            line *= (np.sin(along / float(rng.uniform(4, 12))) > -0.2)
        extra += line
        trails.append((float(x0), float(y0), ang))
    data = expose(rng, expected + extra, gain, rn, 0.0, min(saturation, 1e9), "float32")
    mask = np.zeros(shape, np.int32)
    sat = data >= saturation
    mask[sat] |= MASK_BITS["SAT"]
    variance = ((expected + extra) + rn**2) / gain**2

    # science header, possibly with a slightly wrong WCS (misregistration -> dipoles)
    misaligned = rng.random() < cond.misaligned_fraction
    w_hdr = w_true
    if misaligned:
        d = float(rng.uniform(*cond.misalign_px))
        a = float(rng.uniform(0, 2 * math.pi))
        w_hdr = tan_wcs(ra0, dec0, scale, rot_s, flip_s, shape, crpix_offset=(d * math.cos(a), d * math.sin(a)))
    hdr = fits.Header()
    hdr.update(w_hdr.to_header())
    hdr["PHOTZP"] = (zp + (float(rng.normal(0, 0.03)) if rng.random() < 0.3 else 0.0), "mag = PHOTZP - 2.5 log10(ADU)")
    hdr["FWHMPIX"] = fwhm_px * float(rng.normal(1.0, 0.05))
    hdr["MJD-MID"] = 61000.0
    hdr["GAIN"] = gain
    hdr["EXPTIME"] = 60.0
    hdr["BAND"] = "r"
    hdr["INSTRUME"] = "sim"
    if saturation < 1e9:
        hdr["SATURATE"] = saturation
    science = Image(data.astype(np.float32), hdr, mask, variance.astype(np.float32))

    # --- template pixels ----------------------------------------------------------------------------------
    neg = sign < 0
    allx, ally = np.r_[tx, rtx[neg]], np.r_[ty, rty[neg]]
    allf = np.r_[t_flux, r_flux[neg] * 10 ** (-0.4 * (zp - 25.0))]
    timg = (t_mix * render_stars(t_shape, allx, ally, allf, t_fwhm1, beta_t)
            + (1 - t_mix) * render_stars(t_shape, allx, ally, allf, t_fwhm2, beta_t))
    # co-add noise: sky-limited plus a little source noise, per pixel
    t_var = t_sigma**2 + np.clip(timg, 0, None) * t_sigma / 10.0
    tdata = timg + rng.normal(0, 1, t_shape) * np.sqrt(t_var)
    for _ in range(int(rng.poisson(cond.template_artefacts_per_frame))):
        ix, iy = int(rng.integers(1, t_n - 1)), int(rng.integers(1, t_n - 1))
        tdata[iy, ix] += float(_loguniform(rng, 30.0, 500.0)) * t_sigma
        ra_, dec_ = w_t.wcs_pix2world([ix], [iy], 0)
        ax, ay = w_true.wcs_world2pix(ra_, dec_, 0)
        artefacts.append(("template_artefact", float(ax[0]), float(ay[0])))
    thdr = fits.Header()
    thdr.update(w_t.to_header())
    thdr["PHOTZP"] = 25.0
    thdr["MJDMIN"], thdr["MJDMAX"] = 60900.0, 60990.0
    template = Image(tdata.astype(np.float32), thdr, np.zeros(t_shape, np.int32), t_var.astype(np.float32))

    inside_s = (sx > -5) & (sx < n + 5) & (sy > -5) & (sy < n + 5)
    return SimPair(science, template, np.column_stack([rx, ry, sign]), r_flux,
                   artefacts, trails, np.column_stack([sx[inside_s], sy[inside_s]]), misaligned,
                   {"pixel_scale": scale, "fwhm_px": fwhm_px, "zp": zp, "depth": depth, "smear": smear,
                    "t_scale": t_scale, "t_fwhm_px": t_fwhm_arcsec / scale, "partial": bool(partial),
                    "saturation": saturation, "sky_sigma": sky_sigma_adu,
                    "star_flux": s_flux[inside_s]})


def conditions_from_calexps(calexps: list[Image], base: Conditions = Conditions()) -> Conditions:
    """Conditions narrowed to one instrument's frames: its pixel scale, seeing, depth, zero-points, size."""
    scales, fwhms, depths, zps, sizes = [], [], [], [], []
    for im in calexps:
        w = im.wcs
        if w is None or "PHOTZP" not in im.header:
            continue
        s = pixel_scale_arcsec(w)
        f = float(im.header.get("FWHMPIX", 0.0) or 0.0) or 3.0
        zp = float(im.header["PHOTZP"])
        if im.variance is not None and np.isfinite(im.variance).any():
            sig = float(np.sqrt(np.nanmedian(im.variance)))
        else:
            from astropy.stats import sigma_clipped_stats

            sig = float(sigma_clipped_stats(im.data, sigma=3.0)[2])
        flim = 5.0 * sig * math.sqrt(4 * math.pi) * f / FWHM_SIGMA
        scales.append(s)
        fwhms.append(f)
        zps.append(zp)
        depths.append(zp - 2.5 * math.log10(max(flim, 1e-9)))
        sizes.append(min(im.shape))
    if not scales:
        raise ValueError("no calexp with a WCS and PHOTZP to take conditions from")

    def span(v, pad_lo, pad_hi, lo=None, hi=None):
        a, b = float(np.min(v)) - pad_lo, float(np.max(v)) + pad_hi
        return (a if lo is None else max(a, lo), b if hi is None else min(b, hi))

    s_lo, s_hi = float(np.min(scales)), float(np.max(scales))
    f_lo, f_hi = span(fwhms, 0.3, 0.5, lo=1.5)
    size = int(np.clip(np.median(sizes), 64, 160))
    return base.narrowed(
        pixel_scale=(0.97 * s_lo, 1.03 * s_hi),
        seeing_arcsec=(f_lo * s_lo, f_hi * s_hi),
        fwhm_px=(f_lo, f_hi),
        depth_mag=span(depths, 1.0, 0.5),
        size=(max(64, size - 16), size + 16),
    )
