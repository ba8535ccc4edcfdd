"""Training the real/bogus classifier: a labelled set from the simulator, training, held-out evaluation.

Labels are only trustworthy when we made the sky: each simulated pair is a science frame and a deep template
of the same star field (heterogeneous pixel scales, rotations, seeing, depths, zero-points), into which
*real* point sources of varied flux are injected (in the science frame, a few in the template as fading
sources, some on top of stars) together with *bogus* features: cosmic rays, hot pixels, satellite trails,
dipoles from a science WCS that is slightly wrong, and bad subtractions (saturated stars, tracking smear,
PSF wings the kernel cannot match, template artefacts). Every pair then goes through the production
``diffim`` code, so the classifier learns from exactly the candidates and stamps the pipeline makes; a
candidate is real when it lies on an injected source of the same sign, bogus otherwise.

Run as a module to (re)make the shipped weights:
``python -m openastro_parsl.tasks.realbogus_training --out openastro_parsl/tasks/data/realbogus_v1.pt``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from pydantic import Field

from ..datastore.image import MASK_BITS, Image
from ..pipeline.connections import Connections, Input, Output
from ..pipeline.task import NoWorkFound, PipelineTask, Resources, TaskConfig
from ..sim.render import expose
from . import realbogus as rb
from .diffim import FWHM_SIGMA, difference_image

__all__ = ["Conditions", "SimPair", "simulate_pair", "conditions_from_calexps", "build_training_set",
           "train_model", "evaluate", "format_metrics", "BOGUS_KINDS", "truth_calexp", "truth_template"]

BOGUS_KINDS = ("noise", "cosmic_ray", "hot_pixel", "trail", "dipole", "star_residual", "template_artefact",
               "edge")
KIND_CODE = {k: i for i, k in enumerate(("real",) + BOGUS_KINDS)}


# --------------------------------------------------------------------------------------------------------------
# Simulated pairs
# --------------------------------------------------------------------------------------------------------------

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


def _tan_wcs(ra0, dec0, scale_arcsec, rot_deg, flip, shape, crpix_offset=(0.0, 0.0)) -> WCS:
    ny, nx = shape
    s = scale_arcsec / 3600.0
    t = math.radians(rot_deg)
    cd = s * np.array([[-math.cos(t), math.sin(t)], [math.sin(t), math.cos(t)]])
    if flip:
        cd[:, 0] *= -1.0
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra0, dec0]
    w.wcs.crpix = [(nx + 1) / 2.0 + crpix_offset[0], (ny + 1) / 2.0 + crpix_offset[1]]
    w.wcs.cd = cd
    w.wcs.radesys = "ICRS"
    return w


_GL_X, _GL_W = np.polynomial.legendre.leggauss(3)
_SUB, _W2 = _GL_X / 2.0, np.outer(_GL_W / 2.0, _GL_W / 2.0)


def render_stars(shape, x, y, flux, fwhm: float, beta: float, chunk: int = 64) -> np.ndarray:
    """Point sources as pixel-integrated Moffats (3x3 Gauss-Legendre), stamps of 4.5 FWHM (at most 30 px).

    The simulator's ``star_image`` with shorter stamps: training needs thousands of frames, and the ~1 % of
    flux beyond the stamp is the same in every frame (a zero-point offset the kernel absorbs).
    """
    ny, nx = shape
    x, y, flux = (np.atleast_1d(np.asarray(a, float)) for a in (x, y, flux))
    R = int(np.clip(math.ceil(4.5 * fwhm), 6, 30))
    keep = (x > -R) & (x < nx - 1 + R) & (y > -R) & (y < ny - 1 + R) & (flux > 0)
    x, y, flux = x[keep], y[keep], flux[keep]
    pad = 2 * R + 1
    canvas = np.zeros((ny + 2 * pad) * (nx + 2 * pad))
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    norm = (beta - 1.0) / (math.pi * alpha**2)
    d = np.arange(-R, R + 1)
    for s in range(0, len(x), chunk):
        xs, ys, fs = x[s:s + chunk], y[s:s + chunk], flux[s:s + chunk]
        ix, iy = np.rint(xs).astype(int), np.rint(ys).astype(int)
        u = (ix[:, None] + d[None, :] - xs[:, None])[:, :, None] + _SUB[None, None, :]
        v = (iy[:, None] + d[None, :] - ys[:, None])[:, :, None] + _SUB[None, None, :]
        r2 = (v[:, :, None, :, None] ** 2 + u[:, None, :, None, :] ** 2) / alpha**2
        val = np.einsum("nyxab,ab->nyx", norm * (1.0 + r2) ** (-beta), _W2) * fs[:, None, None]
        rows = (iy[:, None] + d[None, :] + pad)[:, :, None]
        cols = (ix[:, None] + d[None, :] + pad)[:, None, :]
        canvas += np.bincount((rows * (nx + 2 * pad) + cols).ravel(), weights=val.ravel(), minlength=canvas.size)
    return canvas.reshape(ny + 2 * pad, nx + 2 * pad)[pad:-pad, pad:-pad]


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
    w_true = _tan_wcs(ra0, dec0, scale, rot_s, flip_s, shape)

    # template: finer or equal pixels, own orientation, deeper, its own (often mixed) PSF
    t_scale = scale * float(rng.uniform(0.45, 1.0))
    t_n = int(min(1.15 * n * scale / t_scale + 8, 360))
    partial = rng.random() < cond.partial_template_fraction
    off = (rng.uniform(-0.45, 0.45, 2) * t_n) if partial else rng.uniform(-0.03, 0.03, 2) * t_n
    t_shape = (t_n, t_n)
    w_t = _tan_wcs(ra0, dec0, t_scale, float(rng.uniform(0, 360)), bool(rng.random() < 0.3), t_shape,
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
    from ..sim.sky import tangent_to_radec

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
        w_hdr = _tan_wcs(ra0, dec0, scale, rot_s, flip_s, shape, crpix_offset=(d * math.cos(a), d * math.sin(a)))
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


def label_candidates(pair: SimPair, cands, fwhm: float) -> tuple[np.ndarray, np.ndarray]:
    """(label 1 real / 0 bogus, kind code) per candidate, from what was injected where."""
    n = len(cands)
    labels = np.zeros(n, np.int64)
    kinds = np.full(n, KIND_CODE["noise"], np.int64)
    if n == 0:
        return labels, kinds
    x, y = np.asarray(cands["x"], float), np.asarray(cands["y"], float)
    pos = np.asarray(cands["flux"], float) > 0
    r_real = max(1.5, 0.6 * fwhm)
    flags = np.asarray(cands["flags"])
    for i in range(n):
        if len(pair.real):
            d = np.hypot(pair.real[:, 0] - x[i], pair.real[:, 1] - y[i])
            j = int(np.argmin(d))
            if d[j] <= r_real and (pair.real[j, 2] > 0) == pos[i]:
                labels[i] = 1
                kinds[i] = KIND_CODE["real"]
                continue
        kind = None
        best = 3.0
        for k, ax, ay in pair.artefacts:
            dd = math.hypot(ax - x[i], ay - y[i])
            if dd < best + (3.0 if k == "cosmic_ray" else 0.0):
                kind, best = k, dd
        if kind is None:
            for (x0, y0, ang) in pair.trails:
                if abs(-(x[i] - x0) * math.sin(ang) + (y[i] - y0) * math.cos(ang)) < 2.0 * fwhm:
                    kind = "trail"
        if kind is None and len(pair.stars_xy):
            ds = np.hypot(pair.stars_xy[:, 0] - x[i], pair.stars_xy[:, 1] - y[i])
            if ds.min() < 2.5 * fwhm:
                kind = "dipole" if pair.misaligned else "star_residual"
        if kind is None and flags[i] & 3:
            kind = "edge"
        kinds[i] = KIND_CODE[kind or "noise"]
    return labels, kinds


def conditions_from_calexps(calexps: list[Image], base: Conditions = Conditions()) -> Conditions:
    """Conditions narrowed to one instrument's frames: its pixel scale, seeing, depth, zero-points, size."""
    from astropy.wcs.utils import proj_plane_pixel_area

    scales, fwhms, depths, zps, sizes = [], [], [], [], []
    for im in calexps:
        w = im.wcs
        if w is None or "PHOTZP" not in im.header:
            continue
        s = math.sqrt(proj_plane_pixel_area(w.celestial)) * 3600.0
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


# --------------------------------------------------------------------------------------------------------------
# Demo-survey frames as a perfect calibration would make them (tests, benchmarks)
# --------------------------------------------------------------------------------------------------------------

def truth_calexp(survey_dir: str | Path, exposure: dict) -> Image:
    """A calexp-like Image of one demo exposure from its raw file and truth.json entry: the true WCS, the true
    zero-point in the calexp convention (mag = PHOTZP - 2.5 log10 ADU), FWHMPIX, variance and SAT mask."""
    import warnings

    e = exposure
    path = Path(survey_dir) / "raw" / e["file"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(path) as h:
            raw = np.asarray(h[0].data, dtype=np.float64)
    gain, rn = float(e["gain"]), float(e["read_noise"])
    data = raw - float(e["bias_adu"])
    hdr = fits.Header()
    hdr.update(WCS(fits.Header(e["wcs"])).to_header())
    hdr["PHOTZP"] = float(e["zero_point"]) + 2.5 * math.log10(float(e["exptime"]) / gain)
    hdr["FWHMPIX"] = float(e["seeing_fwhm_px"])
    hdr["MJD-MID"] = float(e["mjd"])
    hdr["BAND"] = e["band"]
    hdr["INSTRUME"] = e["instrument"]
    hdr["EXPTIME"] = float(e["exptime"])
    mask = np.where(raw >= float(e["saturation_adu"]) - 1, MASK_BITS["SAT"], 0).astype(np.int32)
    var = (np.clip(data, 0, None) * gain + rn**2) / gain**2
    return Image(data.astype(np.float32), hdr, mask, var.astype(np.float32))


def truth_template(survey_dir: str | Path, truth: dict, band: str, mjd_max: float, *, scale_arcsec: float = 0.5,
                   size: int = 360, instruments: tuple[str, ...] | None = None, every: int = 1) -> Image:
    """A templateCoadd-like Image (PHOTZP 25, variance, NO_DATA mask) of the demo field: the exposures of
    ``band`` before ``mjd_max`` (every ``every``-th), sky-subtracted, scaled to zero-point 25, resampled onto a
    north-up grid and averaged with inverse-variance weights and 3-sigma clipping."""
    import warnings

    from astropy.stats import sigma_clip, sigma_clipped_stats
    from reproject import reproject_interp

    f = truth["fields"][0]
    w = _tan_wcs(f["ra"], f["dec"], scale_arcsec, 0.0, False, (size, size))
    frames = [e for e in truth["exposures"] if e["band"] == band and e["mjd"] < mjd_max and e["field"] == f["name"]
              and (instruments is None or e["instrument"] in instruments)][::every]
    if not frames:
        raise ValueError(f"no {band} exposures before MJD {mjd_max}")
    stack, wts = [], []
    for e in frames:
        im = truth_calexp(survey_dir, e)
        _, med, _ = sigma_clipped_stats(im.data, sigma=3.0)
        k = 10 ** (0.4 * (25.0 - im.header["PHOTZP"]))
        r = (scale_arcsec / (math.sqrt(abs(np.linalg.det(im.wcs.pixel_scale_matrix))) * 3600.0)) ** 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out, fp = reproject_interp((np.stack([(im.data - med) * k, im.variance * k * k]), im.wcs), w,
                                       shape_out=(size, size), order="bilinear")
        good = (np.asarray(fp).reshape(out.shape)[0] > 0.99) & np.isfinite(out[0])
        stack.append(np.where(good, out[0] * r, np.nan))
        wts.append(np.where(good, 1.0 / np.median(out[1][good] * r * r), 0.0))
    S, W = np.array(stack), np.array(wts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clipped = sigma_clip(S, sigma=3.0, axis=0, masked=True)
    Wm = np.where(np.ma.getmaskarray(clipped) | ~np.isfinite(S), 0.0, W)
    tot = Wm.sum(0)
    data = np.where(tot > 0, np.nansum(np.where(Wm > 0, S, 0.0) * Wm, 0) / np.maximum(tot, 1e-30), 0.0)
    var = np.where(tot > 0, 1.0 / np.maximum(tot, 1e-30), 0.0)
    hdr = fits.Header()
    hdr.update(w.to_header())
    hdr["PHOTZP"] = 25.0
    hdr["BAND"] = band
    hdr["MJDMAX"] = max(e["mjd"] for e in frames)
    hdr["NFRAMES"] = len(frames)
    mask = np.where(tot > 0, 0, MASK_BITS["NO_DATA"]).astype(np.int32)
    return Image(data.astype(np.float32), hdr, mask, var.astype(np.float32))


# --------------------------------------------------------------------------------------------------------------
# Training sets
# --------------------------------------------------------------------------------------------------------------

def build_training_set(seed: int, n_frames: int, cond: Conditions = Conditions(), *, stamp_size: int = rb.STAMP_SIZE,
                       log=None) -> dict[str, np.ndarray]:
    """Simulate ``n_frames`` pairs, run diffim on each, label its candidates; deterministic in ``seed``.

    Returns ``stamps`` (N, 3, S, S) float16 (model input, see ``realbogus.prepare_stamps``), ``label``,
    ``kind`` (index into ("real",) + BOGUS_KINDS), ``snr``, ``frame``.
    """
    out = {"stamps": [], "label": [], "kind": [], "snr": [], "frame": []}
    t0 = time.perf_counter()
    for i in range(n_frames):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), i]))
        pair = simulate_pair(rng, cond)
        try:
            _, cands, cutouts, res = difference_image(pair.science, pair.template, stamp_size=stamp_size,
                                                      noise_seed=i, saturation=pair.info["saturation"])
        except NoWorkFound:
            continue
        labels, kinds = label_candidates(pair, cands, res.psf_fwhm)
        if len(cands):
            out["stamps"].append(rb.prepare_stamps(cutouts, stamp_size).astype(np.float16))
            out["label"].append(labels)
            out["kind"].append(kinds)
            out["snr"].append(np.asarray(cands["snr"], float))
            out["frame"].append(np.full(len(cands), i, np.int64))
        if log is not None and (i + 1) % 50 == 0:
            log(f"  {i + 1}/{n_frames} frames, {sum(len(v) for v in out['label'])} candidates, "
                f"{time.perf_counter() - t0:.0f} s")
    if not out["label"]:
        raise ValueError("the simulated frames produced no candidates")
    return {k: np.concatenate(v) for k, v in out.items()}


# --------------------------------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------------------------------

def _augment(x, gen):
    """Random 90-degree rotations and flips (the sky has no preferred orientation), same for a whole batch."""
    import torch

    k = int(torch.randint(0, 4, (1,), generator=gen))
    x = torch.rot90(x, k, dims=(2, 3))
    if int(torch.randint(0, 2, (1,), generator=gen)):
        x = torch.flip(x, dims=(3,))
    return x


def train_model(train: dict[str, np.ndarray], *, seed: int = 1, epochs: int = 12, batch_size: int = 128,
                lr: float = 2e-3, weight_decay: float = 1e-4, threads: int = 2, val_fraction: float = 0.1,
                log=print):
    """Train a fresh ``RealBogusNet``; returns (model, history). Adam + one-cycle LR, BCE loss, augmentation."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(max(1, threads))
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(np.asarray(train["stamps"], np.float32))
    y = torch.from_numpy(np.asarray(train["label"], np.float32))
    n = len(y)
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(val_fraction * n)
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    model = rb.RealBogusNet()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(tr_idx) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    pos_w = torch.tensor(float((y[tr_idx] == 0).sum()) / max(float((y[tr_idx] == 1).sum()), 1.0))
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_w)
    history = []
    t0 = time.perf_counter()
    for ep in range(epochs):
        model.train()
        order = torch.from_numpy(tr_idx[torch.randperm(len(tr_idx), generator=gen).numpy()])
        tot = 0.0
        for s in range(0, len(order), batch_size):
            b = order[s:s + batch_size]
            xb = _augment(x[b], gen)
            opt.zero_grad()
            loss = loss_fn(model(xb).squeeze(1), y[b])
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(b)
        entry = {"epoch": ep + 1, "train_loss": tot / len(order), "seconds": time.perf_counter() - t0}
        if n_val:
            p = rb.predict(model, x[val_idx].numpy(), batch_size=1024)
            m = evaluate(y[val_idx].numpy(), p)
            entry.update({"val_auc": m["auc"], "val_fnr": m["at_0.5"]["fnr"], "val_fpr": m["at_0.5"]["fpr"]})
        history.append(entry)
        if log:
            log(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in entry.items()))
    model.eval()
    return model, history


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a random real > score of a random bogus), ties counted half
    (Mann-Whitney U from ranks)."""
    from scipy.stats import rankdata

    labels = np.asarray(labels).astype(bool)
    n1, n0 = int(labels.sum()), int((~labels).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, float))
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct score threshold, high to low."""
    labels = np.asarray(labels).astype(bool)
    order = np.argsort(-np.asarray(scores, float), kind="stable")
    tp = np.cumsum(labels[order])
    fp = np.cumsum(~labels[order])
    return np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)]


def evaluate(labels: np.ndarray, scores: np.ndarray, thresholds=(0.5, 0.8)) -> dict:
    """ROC AUC, and at each threshold FNR, FPR, precision, recall (and the counts behind them)."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, float)
    out = {"n": int(len(labels)), "n_real": int(labels.sum()), "n_bogus": int((labels == 0).sum()),
           "auc": roc_auc(labels, scores)}
    for t in thresholds:
        pred = scores >= t
        tp = int(np.sum(pred & (labels == 1)))
        fp = int(np.sum(pred & (labels == 0)))
        fn = int(np.sum(~pred & (labels == 1)))
        tn = int(np.sum(~pred & (labels == 0)))
        out[f"at_{t}"] = {"threshold": t, "fnr": fn / max(tp + fn, 1), "fpr": fp / max(fp + tn, 1),
                          "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1),
                          "tp": tp, "fp": fp, "fn": fn, "tn": tn}
    return out


def format_metrics(m: dict) -> str:
    lines = [f"held-out candidates: {m['n']} ({m['n_real']} real, {m['n_bogus']} bogus)",
             f"ROC AUC: {m['auc']:.4f}"]
    for k in sorted(k for k in m if k.startswith("at_")):
        v = m[k]
        lines.append(f"threshold {v['threshold']}: FNR {v['fnr']:.4f}  FPR {v['fpr']:.4f}  "
                     f"precision {v['precision']:.4f}  recall {v['recall']:.4f}")
    if "per_kind" in m:
        lines.append("per kind (fraction scored >= 0.5): " + ", ".join(
            f"{k} {v['frac_real']:.3f} (n={v['n']})" for k, v in m["per_kind"].items()))
    return "\n".join(lines)


def per_kind(kinds: np.ndarray, scores: np.ndarray, t: float = 0.5) -> dict:
    names = ("real",) + BOGUS_KINDS
    out = {}
    for code in np.unique(kinds):
        sel = kinds == code
        out[names[int(code)]] = {"n": int(sel.sum()), "frac_real": float(np.mean(scores[sel] >= t))}
    return out


# --------------------------------------------------------------------------------------------------------------
# Pipeline tasks (dimensions: instrument; pipelines/train_realbogus.yaml)
# --------------------------------------------------------------------------------------------------------------

class TrainingSetConfig(TaskConfig):
    seed: int = Field(1, description="Seed of the simulated training frames (deterministic).")
    n_frames: int = Field(300, ge=1, description="Simulated frames (each gives ~30 candidates).")
    heldout_seed: int = Field(2, description="Seed of the held-out frames (different sky, same conditions).")
    heldout_frames: int = Field(100, ge=1, description="Simulated frames of the held-out set.")
    from_calexps: bool = Field(True, description="Narrow the simulated conditions to this instrument's calexps "
                               "(pixel scale, seeing, depth, zero-points, size); False: the broad defaults.")


class TrainingSetConnections(Connections):
    calexps = Input("calexp", ("instrument", "exposure"), "Image", multiple=True,
                    doc="The instrument's calibrated frames: where the simulated conditions come from.")
    training = Output("rbTrainingSet", ("instrument",), "NumpyArrays",
                      doc="Labelled stamps: stamps, label, kind, snr, frame, split (0 train, 1 held-out).")


class TrainingSetTask(PipelineTask):
    """Labelled real/bogus stamps for one instrument, simulated under its observed conditions."""

    dimensions = ("instrument",)
    Config = TrainingSetConfig
    Connections = TrainingSetConnections
    resources = Resources(cores=1, memory_mb=4096, walltime_min=60, resource_class="slow")

    def run(self, calexps, data_id=None):
        c = self.config
        cond = conditions_from_calexps(calexps) if c.from_calexps else Conditions()
        self.log.info("conditions: %s", json.dumps(asdict(cond)))
        tr = build_training_set(c.seed, c.n_frames, cond, log=self.log.info)
        ho = build_training_set(c.heldout_seed + 10_000, c.heldout_frames, cond, log=self.log.info)
        out = {k: np.concatenate([tr[k], ho[k]]) for k in tr}
        out["split"] = np.r_[np.zeros(len(tr["label"]), np.int8), np.ones(len(ho["label"]), np.int8)]
        out["conditions_json"] = np.asarray(json.dumps(asdict(cond)))
        self.log.info("%d training and %d held-out candidates (%.1f%% real)", len(tr["label"]), len(ho["label"]),
                      100 * out["label"].mean())
        return {"training": out}


class TrainConfig(TaskConfig):
    seed: int = Field(1, description="Torch seed (initial weights, batches, augmentation).")
    epochs: int = Field(12, ge=1, description="Passes over the training stamps.")
    batch_size: int = Field(128, ge=8, description="Stamps per optimisation step.")
    learning_rate: float = Field(2e-3, gt=0, description="Peak learning rate of the one-cycle schedule.")
    threads: int = Field(1, ge=1, description="torch CPU threads.")
    version: str = Field("trained", description="Version string stored with the weights.")


class TrainConnections(Connections):
    training = Input("rbTrainingSet", ("instrument",), "NumpyArrays")
    model = Output("rbModel", ("instrument",), "NumpyArrays",
                   doc="Weights (state-dict arrays) + meta_json; rbClassify's `weights` may point at its file.")


class TrainTask(PipelineTask):
    """Train the real/bogus CNN on the training split of an ``rbTrainingSet``."""

    dimensions = ("instrument",)
    Config = TrainConfig
    Connections = TrainConnections
    resources = Resources(cores=2, memory_mb=4096, walltime_min=60, resource_class="slow")

    def run(self, training, data_id=None):
        c = self.config
        sel = np.asarray(training["split"]) == 0
        if sel.sum() < 50 or len(np.unique(training["label"][sel])) < 2:
            raise ValueError(f"{dict(data_id or {})}: training split has {int(sel.sum())} stamps; need both classes")
        t0 = time.perf_counter()
        model, history = train_model({"stamps": training["stamps"][sel], "label": training["label"][sel]},
                                     seed=c.seed, epochs=c.epochs, batch_size=c.batch_size, lr=c.learning_rate,
                                     threads=c.threads, log=self.log.info)
        meta = rb.model_meta(model, version=c.version, seed=c.seed, training_seconds=time.perf_counter() - t0,
                             n_train=int(sel.sum()), history=history)
        return {"model": rb.model_to_arrays(model, meta)}


class EvaluateConfig(TaskConfig):
    threads: int = Field(1, ge=1, description="torch CPU threads.")
    batch_size: int = Field(512, ge=1, description="Stamps per inference batch.")


class EvaluateConnections(Connections):
    model = Input("rbModel", ("instrument",), "NumpyArrays")
    training = Input("rbTrainingSet", ("instrument",), "NumpyArrays")
    metrics = Output("rbEvaluation", ("instrument",), "StructuredData",
                     doc="auc; fnr, fpr, precision, recall at 0.5 and 0.8; per bogus kind.")
    plot = Output("rbEvaluationPlot", ("instrument",), "Plot", doc="ROC curve and score histograms.")


class EvaluateTask(PipelineTask):
    """Score the held-out split with the trained model: AUC, FNR/FPR, precision/recall at 0.5 and 0.8."""

    dimensions = ("instrument",)
    Config = EvaluateConfig
    Connections = EvaluateConnections
    resources = Resources(cores=1, memory_mb=2048, walltime_min=20)

    def run(self, model, training, data_id=None):
        import torch

        torch.set_num_threads(self.config.threads)
        net, meta = rb.model_from_arrays(model)
        sel = np.asarray(training["split"]) == 1
        if not sel.any():
            raise ValueError("rbTrainingSet has no held-out split")
        scores = rb.predict(net, np.asarray(training["stamps"][sel], np.float32), batch_size=self.config.batch_size)
        m = evaluate(training["label"][sel], scores)
        m["per_kind"] = per_kind(training["kind"][sel], scores)
        m["model"] = {k: meta.get(k) for k in ("version", "n_params", "seed", "training_seconds")}
        self.log.info("\n%s", format_metrics(m))
        return {"metrics": m, "plot": evaluation_figure(training["label"][sel], scores)}


def evaluation_figure(labels, scores):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 4))
    fpr, tpr = roc_curve(labels, scores)
    a.plot(fpr, tpr)
    a.set_xscale("log")
    a.set_xlim(1e-4, 1)
    a.set_xlabel("false positive rate")
    a.set_ylabel("true positive rate")
    a.set_title("ROC (held-out)")
    bins = np.linspace(0, 1, 41)
    b.hist(scores[labels == 1], bins, alpha=0.6, label="real", log=True)
    b.hist(scores[labels == 0], bins, alpha=0.6, label="bogus", log=True)
    b.axvline(0.5, color="k", lw=0.8)
    b.axvline(0.8, color="k", lw=0.8, ls="--")
    b.set_xlabel("real/bogus score")
    b.legend()
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------------------
# Command line: make the shipped weights
# --------------------------------------------------------------------------------------------------------------

def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description="Train the shipped real/bogus CNN on simulated frames.")
    p.add_argument("--out", type=Path, default=rb.DEFAULT_WEIGHTS)
    p.add_argument("--train-seed", type=int, default=1)
    p.add_argument("--train-frames", type=int, default=700)
    p.add_argument("--heldout-seed", type=int, default=rb.HELDOUT_SEED)
    p.add_argument("--heldout-frames", type=int, default=250)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--version", default="1")
    p.add_argument("--cache", type=Path, default=None, help="NPZ cache of the simulated sets")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    if a.cache and a.cache.exists():
        z = dict(np.load(a.cache))
        tr = {k[3:]: v for k, v in z.items() if k.startswith("tr_")}
        ho = {k[3:]: v for k, v in z.items() if k.startswith("ho_")}
    else:
        tr = build_training_set(a.train_seed, a.train_frames, log=print)
        ho = build_training_set(a.heldout_seed, a.heldout_frames, log=print)
        if a.cache:
            np.savez(a.cache, **{f"tr_{k}": v for k, v in tr.items()}, **{f"ho_{k}": v for k, v in ho.items()})
    t_sim = time.perf_counter() - t0
    print(f"training set {len(tr['label'])} ({tr['label'].mean():.3f} real), held-out {len(ho['label'])}; "
          f"simulated in {t_sim:.0f} s")
    t1 = time.perf_counter()
    model, history = train_model(tr, seed=a.train_seed, epochs=a.epochs, threads=a.threads)
    t_train = time.perf_counter() - t1
    scores = rb.predict(model, ho["stamps"].astype(np.float32))
    m = evaluate(ho["label"], scores)
    m["per_kind"] = per_kind(ho["kind"], scores)
    print(format_metrics(m))
    meta = rb.model_meta(model, version=a.version, seed=a.train_seed, training_seconds=t_train,
                         n_train=int(len(tr["label"])), history=history)
    meta.update({"train_frames": a.train_frames, "train_seed": a.train_seed, "heldout_seed": a.heldout_seed,
                 "heldout_frames": a.heldout_frames, "simulation_seconds": t_sim, "heldout_metrics": m})
    rb.save_weights(model, a.out, meta)
    print(f"wrote {a.out} ({a.out.stat().st_size / 1024:.0f} KiB), {meta['n_params']} parameters, "
          f"trained in {t_train:.0f} s")


if __name__ == "__main__":
    main()
