"""The subtraction: science minus the PSF-matched, flux-scaled template on the science frame's grid (``subtract``),
and everything needed to measure the difference (``DiffimResult``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ....astro.psf import FWHM_SIGMA, MoffatPSF
from ....datastore.image import MASK_BITS, Image
from ....pipeline.task import NoWorkFound
from .alignment import align_template
from .background import difference_sky, sky_background
from .kernel import fit_psf_matching_kernel, gaussian_kernel, select_kernel_stars, template_stars
from .psf import DifferencePSF, fit_moffat

__all__ = ["DiffimResult", "subtract"]

_BAD = MASK_BITS["BAD"] | MASK_BITS["SAT"] | MASK_BITS["CR"]


@dataclass
class DiffimResult:
    """What ``subtract`` returns: the difference and everything needed to measure it and cut it out."""

    difference: np.ndarray
    variance: np.ndarray          # inf where masked
    bad: np.ndarray               # masked in the difference (no data, bad science pixels, kernel-grown edges)
    nodata: np.ndarray
    science: np.ndarray           # background-subtracted science (ADU)
    template: np.ndarray          # aligned template in science units, not convolved
    sci_var: np.ndarray
    tmpl_var: np.ndarray
    smask: np.ndarray
    kernel: np.ndarray
    kernel_sum: float
    kernel_bg: float
    kernel_chi2: float
    kernel_stars: int
    method: str                   # alard-lupton | gaussian
    convolved: str                # template | science
    psf_science: MoffatPSF
    psf_template: MoffatPSF
    psf: DifferencePSF
    zp: float
    template_scale: float
    sky_rms: float
    noise_factor: float = 1.0

    @property
    def fwhm_science(self) -> float:
        return self.psf_science.fwhm

    @property
    def fwhm_template(self) -> float:
        return self.psf_template.fwhm

    @property
    def psf_fwhm(self) -> float:
        return self.psf.science.fwhm if self.psf.kernel is None else self.fwhm_template


def subtract(science: Image, template: Image, *, science_zp: float | None = None, template_zp: float | None = None,
             kernel_stars: int = 25, kernel_min_stars: int = 2, kernel_min_snr: float = 20.0,
             saturation: float | None = None, background_box: int = 64, degrees=(4, 3, 2),
             max_kernel_ratio: float = 1.25, difference_background: bool = True, resample: str = "exact",
             psf_beta: float = 3.0) -> DiffimResult:
    """Science minus the PSF-matched, flux-scaled template, on the science frame's grid, with its variance."""
    from astropy.wcs.utils import proj_plane_pixel_area
    from scipy.signal import fftconvolve

    wcs = science.wcs
    if wcs is None:
        raise ValueError("calexp has no celestial WCS")
    zp_s = float(science_zp if science_zp is not None else science.header["PHOTZP"])
    zp_t = float(template_zp if template_zp is not None else template.header.get("PHOTZP", 25.0))
    scale = 10.0 ** (0.4 * (zp_s - zp_t))
    shape = science.shape
    sci_raw = np.asarray(science.data, dtype=np.float64)
    smask = np.zeros(shape, np.int32) if science.mask is None else np.asarray(science.mask, np.int32)
    s_nodata = ~np.isfinite(sci_raw) | ((smask & MASK_BITS["NO_DATA"]) != 0)
    s_bad = ((smask & _BAD) != 0)
    sky, sky_rms = sky_background(np.where(s_nodata, 0.0, sci_raw), s_nodata | s_bad, background_box)
    sci = np.where(s_nodata, 0.0, sci_raw - sky)
    if science.variance is not None:
        var_s = np.asarray(science.variance, dtype=np.float64).copy()
        var_s[~np.isfinite(var_s) | (var_s <= 0)] = sky_rms**2
    else:
        var_s = np.full(shape, sky_rms**2) + np.clip(sci, 0, None) / float(science.header.get("GAIN", 1.0))
    tmpl, var_t, t_nodata = align_template(template, wcs, shape, scale, resample)
    nodata = s_nodata | t_nodata
    if (~nodata).sum() < 0.02 * nodata.size or (~nodata).sum() < 400:
        raise NoWorkFound(f"template covers only {int((~nodata).sum())} px of the frame")
    # the co-add is sky-subtracted already; remove what is left the same way as for the science frame
    tsky, _ = sky_background(tmpl, t_nodata, background_box)
    tmpl = np.where(t_nodata, 0.0, tmpl - tsky)
    bad = nodata | s_bad

    # PSFs: Moffats fitted to stars of each image (the template is deep, its own stars suffice)
    fwhm_hdr = float(science.header.get("FWHMPIX", 0.0) or 0.0)
    guess = fwhm_hdr if fwhm_hdr > 0 else 3.0
    beta_hdr = float(science.header.get("PSFBETA", 0.0) or 0.0)
    if 1.5 < beta_hdr < 10.0:  # calibrate's own Moffat fit: the best prior for a sparse frame
        psf_beta = beta_hdr
    objs, iso = select_kernel_stars(sci, tmpl, bad, var_s, kernel_stars, kernel_min_snr, saturation, guess)
    xy = list(zip(objs["x"][iso], objs["y"][iso], strict=True))
    psf_s = fit_moffat(sci, var_s, bad, xy, guess, beta_guess=psf_beta) if xy else None
    if psf_s is None:
        psf_s = MoffatPSF(guess, psf_beta, "header" if fwhm_hdr > 0 else "default")
    th = float(template.header.get("FWHMPIX", 0.0) or 0.0)
    t_guess = (th * math.sqrt(float(proj_plane_pixel_area(template.wcs.celestial))
                              / float(proj_plane_pixel_area(wcs.celestial))) if th > 0 else psf_s.fwhm)
    txy = xy if len(xy) >= 4 else template_stars(tmpl, bad, var_t, max(t_guess, 1.0))
    psf_t = fit_moffat(tmpl, var_t + 1e-12, bad, txy, max(t_guess, 1.0)) if txy else None
    if psf_t is None:
        psf_t = MoffatPSF(max(t_guess, 0.5), psf_beta, "header" if th > 0 else "science")
    fwhm_s, fwhm_t = psf_s.fwhm, psf_t.fwhm

    # the matching kernel
    sig_s, sig_t = fwhm_s / FWHM_SIGMA, fwhm_t / FWHM_SIGMA
    sig_k = math.sqrt(abs(sig_s**2 - sig_t**2))
    base = max(sig_k, 0.5 * min(sig_s, sig_t), 0.5)
    sigmas = (0.5 * base, base, 2.0 * base)
    half_k = int(np.clip(math.ceil(3.0 * sigmas[2]), 4, 15))
    stamp_half = int(np.clip(round(2.0 * max(fwhm_s, fwhm_t)), 6, 20))
    centres = list(zip(np.rint(objs["x"]).astype(int), np.rint(objs["y"]).astype(int), strict=True))
    n_c = len(centres)
    degs = tuple(degrees) if n_c >= 6 else (tuple(min(d, 2) for d in degrees) if n_c >= 3 else (1, 0, 0))
    convolve_template = fwhm_t <= fwhm_s
    method, chi2, nstars, bgk, kern = "gaussian", float("nan"), 0, 0.0, None
    if n_c >= kernel_min_stars:
        fits_ = {}
        ratio = fwhm_t / fwhm_s
        directions = (True, False) if 0.75 < ratio < 1.33 else (convolve_template,)
        for conv_t in directions:
            ref, target, vr, vt = (tmpl, sci, var_t, var_s) if conv_t else (sci, tmpl, var_s, var_t)
            try:
                fits_[conv_t] = fit_psf_matching_kernel(ref, target, vr, vt, bad, centres, half_k, stamp_half,
                                                        sigmas, degs)
            except (ValueError, np.linalg.LinAlgError):
                continue
        # the Gaussian from the two FWHMs, its amplitude fitted, competes on the same stamps
        ref, target, vr, vt = (tmpl, sci, var_t, var_s) if convolve_template else (sci, tmpl, var_s, var_t)
        try:
            g = fit_psf_matching_kernel(ref, target, vr, vt, bad, centres, half_k, stamp_half, sigmas,
                                        basis=gaussian_kernel(sig_k, half_k)[None])
            fits_[("gaussian-fit", convolve_template)] = g
        except (ValueError, np.linalg.LinAlgError):
            pass
        # a kernel whose sum is far from the zero-points' ratio fitted something else than stars
        fits_ = {k: v for k, v in fits_.items()
                 if np.isfinite(v[0]).all() and 1.0 / max_kernel_ratio < v[0].sum() < max_kernel_ratio}
        if fits_:
            best = min(fits_, key=lambda k: fits_[k][2])
            kern, bgk, chi2, nstars = fits_[best]
            method, convolve_template = (best if isinstance(best, tuple) else ("alard-lupton", best))
    if kern is None:
        kern = gaussian_kernel(sig_k, half_k)
        bgk = 0.0
    ksum = float(kern.sum())
    grow = np.ones((2 * half_k + 1, 2 * half_k + 1))
    near_nodata = fftconvolve(nodata.astype(float), grow, mode="same") > 0.5
    psf_half = int(np.clip(math.ceil(3.0 * max(fwhm_s, fwhm_t)), 6, 20))
    if convolve_template:
        diff = sci - fftconvolve(tmpl, kern, mode="same") - bgk
        var_d = var_s + fftconvolve(var_t, kern**2, mode="same")
        psf = DifferencePSF(psf_s, None, psf_half)
    else:
        diff = (fftconvolve(sci, kern, mode="same") + bgk - tmpl) / ksum
        var_d = (fftconvolve(var_s, kern**2, mode="same") + var_t) / ksum**2
        psf = DifferencePSF(psf_s, kern, psf_half)
    bad_d = bad | near_nodata
    if difference_background and (~bad_d).sum() > 400:
        diff = diff - difference_sky(diff, bad_d, sci, var_s, tmpl, var_t, max(fwhm_s, fwhm_t), background_box)
    var_d = np.where(bad_d | ~np.isfinite(var_d) | (var_d <= 0), np.inf, var_d)
    diff = np.where(bad_d, 0.0, diff)
    return DiffimResult(diff, var_d, bad_d, nodata, sci, tmpl, var_s, var_t, smask, kern, ksum, bgk, chi2, nstars,
                        method, "template" if convolve_template else "science", psf_s, psf_t, psf, zp_s, scale,
                        sky_rms)
