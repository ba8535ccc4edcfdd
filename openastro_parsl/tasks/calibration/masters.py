"""Master calibrations (``pipelines/calib.yaml``): bias, dark and flat from many frames, with a bad-pixel mask.

Conventions (what ISR relies on; ``docs/calibration.md``):

- ``masterBias`` (instrument): the per-pixel bias in ADU, pattern included.
- ``masterDark`` (instrument): the dark *rate* in ADU per second, bias subtracted; ISR scales it by each
  frame's exposure time, so one master serves every exposure time (dark current is linear in time on the
  cameras this serves; hot pixels that are not show up in the mask instead). Its MASK plane marks hot pixels.
- ``masterFlat`` (instrument, band): the relative response, bias and (scaled) dark subtracted, each flat
  normalised by its own median before combining and the result by its median, so a star's electrons divided
  by the flat are the electrons an ideal detector of the same median response would have counted. Its MASK
  plane marks dead and low-response pixels.

Every combination is the sigma-clipped mean of ``combine.combine``, which reads memory-mapped frames one tile
at a time: memory is bounded by ``memory_cap_mb``, not by the number of frames.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from ...datastore.image import MASK_BITS, Image
from ...pipeline.connections import Connections, Input, Output
from ...pipeline.task import PipelineTask, Resources, TaskConfig
from .combine import SAMPLE_STEP, CorrectedFrame, combine, robust_level, robust_sigma
from .detector import Detector, detector_info

__all__ = ["MasterBiasTask", "MasterConfig", "MasterDarkTask", "MasterFlatTask", "hot_pixels", "low_pixels",
           "pair_read_noise_adu", "read_noise_adu"]

BAD = MASK_BITS["BAD"]


class MasterConfig(TaskConfig):
    clip_sigma: float = Field(3.0, gt=0, description="Rejection threshold in units of each pixel's noise.")
    clip_iters: int = Field(5, ge=0, description="Clipping passes (0: plain mean).")
    memory_cap_mb: float = Field(512.0, gt=0, description="Working memory of the combination (tiles).")
    default_gain: float | None = Field(None, gt=0, description="Gain (e-/ADU) for headers without one.")
    default_read_noise: float | None = Field(None, ge=0, description="Read noise (e-) for headers without one.")


class DarkConfig(MasterConfig):
    hot_sigma: float = Field(5.0, gt=0, description="A pixel whose dark rate exceeds the median by this many "
                                                    "(robust) sigma of the rates is hot.")
    hot_min_e_per_s: float = Field(0.5, ge=0, description="...and by at least this many e-/s.")


class FlatConfig(MasterConfig):
    low_cut: float = Field(0.5, gt=0, lt=1, description="Response below this (relative) marks a dead pixel.")
    high_cut: float = Field(1.5, gt=1, description="Response above this (relative) marks a bad pixel.")


def _detector(images: list[Image], c: MasterConfig, what: str) -> Detector:
    """The detector of the first frame, checked against the others (one master = one detector setting)."""
    dets = [detector_info(im.header, im.data, default_gain=c.default_gain, default_read_noise=c.default_read_noise,
                          where=what) for im in images]
    shapes = {tuple(im.data.shape) for im in images}
    if len(shapes) > 1:
        raise ValueError(f"{what}: frames of different shapes {sorted(shapes)}; one master needs one detector format")
    gains = {round(d.gain, 6) for d in dets}
    if len(gains) > 1:
        raise ValueError(f"{what}: frames taken at different gains {sorted(gains)}; combine each setting apart")
    return dets[0]


def pair_read_noise_adu(a: Any, b: Any) -> float:
    """Read noise (ADU) from two bias frames: the robust sigma of their difference over sqrt(2) (the bias and
    its pattern cancel); every SAMPLE_STEP-th row is enough."""
    d = np.asarray(a[::SAMPLE_STEP], np.float64) - np.asarray(b[::SAMPLE_STEP], np.float64)
    return robust_sigma(d) / np.sqrt(2.0)


def read_noise_adu(det: Detector, master_bias: Image, what: str) -> float:
    """The header's read noise, else the one the master bias measured (``RNMEAS``), in ADU."""
    if det.read_noise is not None and det.read_noise > 0:
        return det.read_noise / det.gain
    measured = master_bias.header.get("RNMEAS")
    if measured is None or not float(measured) > 0:
        raise ValueError(f"{what}: no read noise in the header and none measured by the master bias")
    return float(measured) / det.gain


def _exptimes(images: list[Image], dets: Detector, what: str) -> list[float]:
    out = [detector_info(im.header, im.data, default_gain=dets.gain, where=what).exptime for im in images]
    bad = [i for i, t in enumerate(out) if not t > 0]
    if bad:
        raise ValueError(f"{what}: frame(s) {bad} have no positive exposure time")
    return out


def _master(result, template: Image, kind: str, n: int, extra: dict[str, Any], mask: np.ndarray | None) -> Image:
    from astropy.io import fits

    header = fits.Header()
    for key in ("INSTRUME", "TELESCOP", "FILTER"):
        if key in template.header:
            header[key] = template.header[key]
    header["OBSTYPE"] = (f"MASTER{kind.upper()}", "master calibration")
    header["NCOMBINE"] = (n, "frames combined")
    header["NCLIPPED"] = (int(result.n_clipped), "samples rejected by sigma clipping")
    for key, value in extra.items():
        header[key] = value
    m = np.zeros(result.image.shape, np.int32) if mask is None else mask.astype(np.int32)
    m[~np.isfinite(result.image)] |= BAD | MASK_BITS["NO_DATA"]
    return Image(result.image.astype(np.float32), header, m, result.variance.astype(np.float32))


def hot_pixels(rate_adu: np.ndarray, gain: float, hot_sigma: float, hot_min_e_per_s: float) -> np.ndarray:
    """Pixels whose dark rate stands out: above the median by ``hot_sigma`` robust sigma and a floor in e-/s."""
    med = float(np.nanmedian(rate_adu))
    sig = robust_sigma(rate_adu)
    cut = med + max(hot_sigma * sig, hot_min_e_per_s / gain)
    return np.asarray(rate_adu > cut)


def low_pixels(flat: np.ndarray, low_cut: float, high_cut: float) -> np.ndarray:
    """Dead or odd pixels of a normalised flat (dust shadows, ~10-30 % deep, stay: the flat corrects them)."""
    f = np.asarray(flat)
    return ~np.isfinite(f) | (f < low_cut) | (f > high_cut)


class MasterBiasConnections(Connections):
    frames = Input("bias", ("instrument", "exposure"), "RawImage", multiple=True, lazy=True, minimum=3,
                   doc="Bias frames of one instrument (memory-mapped).")
    masterBias = Output("masterBias", ("instrument",), "Image", doc="Per-pixel bias, ADU.")


class MasterBiasTask(PipelineTask):
    """Clipped mean of the bias frames: the per-pixel offset (pattern included) of every read."""

    dimensions = ("instrument",)
    Config = MasterConfig
    Connections = MasterBiasConnections
    resources = Resources(cores=1, memory_mb=1024, walltime_min=30)

    def run(self, frames: list[Image], data_id=None) -> dict[str, Any]:
        c, what = self.config, f"masterBias {data_id or ''}".strip()
        det = _detector(frames, c, what)
        rn_measured = pair_read_noise_adu(frames[0].data, frames[1].data)
        rn_adu = det.read_noise / det.gain if det.read_noise else rn_measured
        corrected = [CorrectedFrame(im.data, (), 1.0, max(rn_adu, 1e-3), det.gain) for im in frames]
        result = combine(corrected, clip_sigma=c.clip_sigma, clip_iters=c.clip_iters, memory_cap_mb=c.memory_cap_mb)
        self.log.info("%s: %d frames, level %.2f ADU, read noise %.2f ADU measured (header: %s)", what, len(frames),
                      float(np.nanmedian(result.image)), rn_measured,
                      "none" if det.read_noise is None else f"{det.read_noise / det.gain:.2f}")
        extra = {"GAIN": det.gain, "RNMEAS": (rn_measured * det.gain, "[e-] read noise measured on bias pairs")}
        if det.read_noise is not None:
            extra["RDNOISE"] = det.read_noise
        return {"masterBias": _master(result, frames[0], "bias", len(frames), extra, None)}


class MasterDarkConnections(Connections):
    frames = Input("dark", ("instrument", "exposure"), "RawImage", multiple=True, lazy=True, minimum=3,
                   doc="Dark frames of one instrument, any exposure times (memory-mapped).")
    masterBias = Input("masterBias", ("instrument",), "Image", doc="The master bias made from the same set.")
    masterDark = Output("masterDark", ("instrument",), "Image",
                        doc="Dark rate, ADU/s, bias subtracted; MASK: hot pixels.")


class MasterDarkTask(PipelineTask):
    """Clipped mean of the bias-subtracted darks, each divided by its exposure time: the dark *rate*."""

    dimensions = ("instrument",)
    Config = DarkConfig
    Connections = MasterDarkConnections
    resources = Resources(cores=1, memory_mb=1024, walltime_min=30)

    def run(self, frames: list[Image], masterBias: Image, data_id=None) -> dict[str, Any]:
        c, what = self.config, f"masterDark {data_id or ''}".strip()
        det = _detector(frames, c, what)
        times = _exptimes(frames, det, what)
        rn_adu = read_noise_adu(det, masterBias, what)
        corrected = [CorrectedFrame(im.data, ((masterBias.data, 1.0),), t, rn_adu, det.gain)
                     for im, t in zip(frames, times, strict=True)]
        result = combine(corrected, clip_sigma=c.clip_sigma, clip_iters=c.clip_iters, memory_cap_mb=c.memory_cap_mb)
        hot = hot_pixels(result.image, det.gain, c.hot_sigma, c.hot_min_e_per_s)
        mask = np.where(hot, BAD, 0).astype(np.int32)
        self.log.info("%s: %d frames (%s s), median rate %.4f ADU/s, %d hot pixels", what, len(frames),
                      ",".join(f"{t:g}" for t in sorted(set(times))), float(np.nanmedian(result.image)), int(hot.sum()))
        return {"masterDark": _master(result, frames[0], "dark", len(frames),
                                      {"BUNIT": "adu/s", "NHOT": int(hot.sum()), "GAIN": det.gain}, mask)}


class MasterFlatConnections(Connections):
    frames = Input("flat", ("instrument", "exposure"), "RawImage", multiple=True, lazy=True, minimum=3,
                   doc="Flat fields of one instrument and band (memory-mapped).")
    masterBias = Input("masterBias", ("instrument",), "Image", doc="Master bias.")
    masterDark = Input("masterDark", ("instrument",), "Image", doc="Master dark rate (scaled by each exptime).")
    masterFlat = Output("masterFlat", ("instrument", "band"), "Image",
                        doc="Relative response, median 1; MASK: dead and low-response pixels.")


class MasterFlatTask(PipelineTask):
    """Each flat bias- and dark-subtracted and normalised by its median; their clipped mean, normalised again."""

    dimensions = ("instrument", "band")
    Config = FlatConfig
    Connections = MasterFlatConnections
    resources = Resources(cores=1, memory_mb=1024, walltime_min=30)

    def run(self, frames: list[Image], masterBias: Image, masterDark: Image, data_id=None) -> dict[str, Any]:
        c, what = self.config, f"masterFlat {data_id or ''}".strip()
        det = _detector(frames, c, what)
        times = _exptimes(frames, det, what)
        rn_adu = read_noise_adu(det, masterBias, what)
        corrected = []
        for i, (im, t) in enumerate(zip(frames, times, strict=True)):
            frame = CorrectedFrame(im.data, ((masterBias.data, 1.0), (masterDark.data, t)), 1.0, rn_adu, det.gain)
            level = robust_level(frame)
            if not level > 0:
                raise ValueError(f"{what}: flat {i} has no positive signal after bias and dark (level {level:g} ADU)")
            frame.divisor = level
            corrected.append(frame)
        result = combine(corrected, clip_sigma=c.clip_sigma, clip_iters=c.clip_iters, memory_cap_mb=c.memory_cap_mb)
        norm = float(np.nanmedian(result.image))
        result.image /= norm
        result.variance /= norm ** 2
        low = low_pixels(result.image, c.low_cut, c.high_cut)
        mask = np.where(low, BAD, 0).astype(np.int32)
        self.log.info("%s: %d flats, response %.3f-%.3f (1-99 %%), %d dead/low pixels", what, len(frames),
                      *np.nanpercentile(result.image, [1, 99]), int(low.sum()))
        return {"masterFlat": _master(result, frames[0], "flat", len(frames),
                                      {"NORMLEVL": (norm, "median of the combined flat before normalising"),
                                       "NBADPIX": int(low.sum())}, mask)}
