"""Flux normalisation of warped frames: subtract the sky, scale to a common photometric zero-point.

After reprojection every frame sits on one grid but still has its own sky level and its own ADU-per-photon
scale. Co-addition needs the same star to have the same pixel values in every frame, so each frame is
background-subtracted (photutils ``Background2D`` with sources masked) and multiplied by
10**(0.4 (target_zp - zp)), which puts it on a system where mag = target_zp - 2.5 log10(flux).
"""

from __future__ import annotations

import warnings

import numpy as np
from pydantic import Field

from ...datastore.image import MASK_BITS, Image
from ...pipeline.connections import Connections, Input, Output
from ...pipeline.task import PipelineTask, Resources, TaskConfig

__all__ = ["estimate_background", "flux_scale", "normalize_image", "pixel_zero_point", "NormalizeTask"]

_EXCLUDE = MASK_BITS["BAD"] | MASK_BITS["SAT"] | MASK_BITS["CR"]


def flux_scale(zp: float, target_zp: float) -> float:
    """Factor taking fluxes with mag = zp - 2.5 log10(F) to fluxes with mag = target_zp - 2.5 log10(F)."""
    return float(10.0 ** (0.4 * (target_zp - zp)))


def estimate_background(data: np.ndarray, mask: np.ndarray | None = None, *, box_size: int = 64,
                        filter_size: int = 3, mask_sources: bool = True, source_nsigma: float = 2.0,
                        source_dilate: int = 5) -> tuple[np.ndarray, float, str]:
    """Smooth sky map, its typical per-pixel rms, and the method used.

    Two passes of ``Background2D`` (sigma-clipped SExtractor mode estimator): the first finds the sky, then
    pixels above ``source_nsigma`` in connected groups (dilated by ``source_dilate`` px to catch the wings) are
    masked and the sky re-measured, so bright stars do not lift it. ``NO_DATA`` pixels are a coverage mask
    (left out and set to 0 in the map); BAD/SAT/CR pixels are ignored. When the covered area is too small or
    ragged for boxes, the sky is a single sigma-clipped median (reported as the method).
    """
    from astropy.stats import SigmaClip, sigma_clipped_stats
    from photutils.background import Background2D, SExtractorBackground, StdBackgroundRMS

    data = np.asarray(data, dtype=np.float64)
    nodata = ~np.isfinite(data)
    bad = np.zeros(data.shape, bool)
    if mask is not None:
        nodata |= (np.asarray(mask) & MASK_BITS["NO_DATA"]) != 0
        bad = (np.asarray(mask) & _EXCLUDE) != 0
    if nodata.all():
        raise ValueError("no covered pixel to estimate a background from")
    work = np.where(nodata, 0.0, data)
    ny, nx = data.shape
    box = int(max(8, min(box_size, ny // 2, nx // 2)))

    def background(exclude):
        try:
            bkg = Background2D(work, box, mask=exclude, coverage_mask=nodata, fill_value=0.0,
                               filter_size=filter_size, sigma_clip=SigmaClip(sigma=3.0, maxiters=10),
                               bkg_estimator=SExtractorBackground(), bkg_rms_estimator=StdBackgroundRMS(),
                               exclude_percentile=50.0)
            return bkg.background, float(bkg.background_rms_median), "Background2D"
        except ValueError:
            _, med, std = sigma_clipped_stats(data[~(nodata | exclude)], sigma=3.0, maxiters=10)
            return np.where(nodata, 0.0, med), float(std), "global median"

    sky, rms, method = background(bad)
    if mask_sources:
        from photutils.segmentation import detect_sources

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NoDetectionsWarning on empty sky is not news
            seg = detect_sources(np.where(nodata | bad, 0.0, work - sky), source_nsigma * rms, 5)
        if seg is not None:
            footprint = np.ones((2 * source_dilate + 1, 2 * source_dilate + 1), bool)
            sources = seg.make_source_mask(footprint=footprint)
            if np.mean(sources[~nodata]) < 0.7:  # keep enough sky to measure
                sky, rms, method = background(bad | sources)
    sky = np.where(nodata, 0.0, sky)
    return sky, rms, method


def normalize_image(image: Image, zp: float, target_zp: float = 25.0, **bkg_options) -> Image:
    """Background-subtracted copy of ``image`` scaled to ``target_zp``; variance scaled by the factor squared."""
    if image.variance is None:
        raise ValueError("image has no VARIANCE plane")
    sky, rms, method = estimate_background(image.data, image.mask, **bkg_options)
    f = flux_scale(zp, target_zp)
    data = ((np.asarray(image.data, np.float64) - sky) * f).astype(np.float32)
    var = (np.asarray(image.variance, np.float64) * f * f).astype(np.float32)
    mask = image.mask.copy() if image.mask is not None else np.zeros(image.shape, np.int32)
    out = Image(data, image.header.copy(), mask, var)
    h = out.header
    h["ORIGZP"] = (float(zp), "input zero-point (mag = ZP - 2.5 log ADU)")
    h["PHOTZP"] = (float(target_zp), "mag = PHOTZP - 2.5 log10(flux)")
    h["FLXSCALE"] = (f, "factor applied to pixels (variance: its square)")
    covered = ~((mask & MASK_BITS["NO_DATA"]) != 0) & np.isfinite(image.data)
    h["BKGMEAN"] = (float(np.mean(sky[covered])) if covered.any() else 0.0, "[ADU] mean subtracted sky")
    h["BKGRMS"] = (rms * f, "per-pixel sky rms after scaling")
    h["BKGMETH"] = (method, "background estimator")
    return out


class NormalizeConfig(TaskConfig):
    target_zp: float = Field(25.0, description="Common zero-point: output mag = target_zp - 2.5 log10(flux).")
    box_size: int = Field(64, ge=8, description="Background2D box (grid pixels); larger than stars, smaller "
                          "than sky gradients.")
    filter_size: int = Field(3, ge=1, description="Median filter (boxes) over the low-resolution sky map.")
    mask_sources: bool = Field(True, description="Mask detected sources (dilated) before the final sky pass.")
    source_nsigma: float = Field(2.0, gt=0, description="Detection threshold for source masking (sky sigma).")
    source_dilate: int = Field(5, ge=0, description="Dilation (pixels) of the source mask, for PSF wings.")
    max_zp_mismatch: float = Field(0.01, ge=0, description="Warn when the header's PHOTZP and photoCalib's zp "
                                   "(converted with EXPTIME and GAIN) differ by more than this (mag).")


class NormalizeConnections(Connections):
    warped = Input("warpedExp", ("instrument", "exposure"), "Image", doc="The frame on the field grid.")
    calib = Input("photoCalib", ("instrument", "exposure"), "StructuredData", doc="Its zero-point.")
    norm = Output("normExp", ("instrument", "exposure"), "Image", doc="Sky-subtracted, on the common zero-point.")


class NormalizeTask(PipelineTask):
    """Subtract the sky and scale a warped frame to the common zero-point (``PHOTZP`` = target_zp)."""

    dimensions = ("instrument", "exposure")
    Config = NormalizeConfig
    Connections = NormalizeConnections
    resources = Resources(cores=1, memory_mb=1024, walltime_min=10)

    def run(self, warped, calib, data_id=None):
        where = ", ".join(f"{k}={v}" for k, v in dict(data_id).items()) if data_id else "warpedExp"
        zp = pixel_zero_point(warped.header, calib, where, self.config.max_zp_mismatch, self.log)
        c = self.config
        out = normalize_image(warped, zp, c.target_zp, box_size=c.box_size, filter_size=c.filter_size,
                              mask_sources=c.mask_sources, source_nsigma=c.source_nsigma,
                              source_dilate=c.source_dilate)
        if "MJD-MID" not in out.header and calib.get("mjd_mid") is not None:
            out.header["MJD-MID"] = (float(calib["mjd_mid"]), "[d] MJD (UTC) mid-exposure")
        if calib.get("zp_err") is not None and np.isfinite(calib["zp_err"]):
            out.header["PHOTZPER"] = (float(calib["zp_err"]), "zero-point uncertainty (mag)")
        self.log.info("%s: sky %.1f ADU (%s), zp %.3f -> %.2f, scale %.4g", where, out.header["BKGMEAN"],
                      out.header["BKGMETH"], zp, c.target_zp, out.header["FLXSCALE"])
        return {"norm": out}


def pixel_zero_point(header, calib: dict, where: str, tolerance: float = 0.01, log=None) -> float:
    """The zero-point of the frame's own pixel values (mag = ZP - 2.5 log10 ADU).

    ``calibrate`` writes it to the calexp header as ``PHOTZP`` (kept through the warp); ``photoCalib``'s ``zp``
    is per second and per electron (mag = zp - 2.5 log10(e-/s)), so it is only comparable through the
    header's EXPTIME and GAIN: that is checked when they are there, and a ``zp_adu`` in photoCalib is used when
    the header has no PHOTZP.
    """
    import math

    head = header.get("PHOTZP")
    zp_adu = float(head) if head is not None else calib.get("zp_adu")
    if zp_adu is None or not np.isfinite(zp_adu):
        raise ValueError(f"{where}: no pixel zero-point: the header has no PHOTZP and photoCalib no zp_adu")
    exptime = header.get("EXPTIME")
    gain = header.get("GAIN", header.get("EGAIN"))
    zp = calib.get("zp")
    if zp is not None and exptime and gain:
        expected = float(zp) + 2.5 * math.log10(float(exptime) / float(gain))
        if abs(expected - float(zp_adu)) > tolerance and log is not None:
            log.warning("%s: PHOTZP %.4f but photoCalib zp %.4f with EXPTIME %s, GAIN %s gives %.4f", where,
                        float(zp_adu), float(zp), exptime, gain, expected)
    return float(zp_adu)
