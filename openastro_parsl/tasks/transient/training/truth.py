"""Demo-survey frames as a perfect calibration would make them (tests, benchmarks): a calexp-like image of one
exposure and a template co-add, from the raw files and ``truth.json``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from ....astro.wcs import pixel_scale_arcsec, tan_wcs
from ....datastore.image import MASK_BITS, Image

__all__ = ["truth_calexp", "truth_template"]


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
    w = tan_wcs(f["ra"], f["dec"], scale_arcsec, 0.0, False, (size, size))
    frames = [e for e in truth["exposures"] if e["band"] == band and e["mjd"] < mjd_max and e["field"] == f["name"]
              and (instruments is None or e["instrument"] in instruments)][::every]
    if not frames:
        raise ValueError(f"no {band} exposures before MJD {mjd_max}")
    stack, wts = [], []
    for e in frames:
        im = truth_calexp(survey_dir, e)
        _, med, _ = sigma_clipped_stats(im.data, sigma=3.0)
        k = 10 ** (0.4 * (25.0 - im.header["PHOTZP"]))
        r = (scale_arcsec / pixel_scale_arcsec(im.wcs)) ** 2
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
