"""Instrument signature removal (label ``isr``): a raw frame in ADU -> ``postIsrImage`` in electrons.

Per pixel: ``e = ((raw - bias - dark_rate * exptime) * gain) / flat``, with a VARIANCE plane (the read noise
and the Poisson noise of the electrons actually counted, divided by flat^2) and a MASK plane: BAD where the
master dark or flat marks a hot, dead or low pixel (their values are interpolated from good neighbours so
source detection sees no spikes), SAT where the raw value reached the saturation level.

The header stays the raw's (WCS, time, site, filter), except what changed with the units: the gain cards read
by the translator become 1.0 (the original goes to ``ISRGAIN``), the saturation cards the saturation level in
electrons (every saturated pixel is set to it, and no unsaturated pixel can reach it), ``BUNIT = electron``.
So calibration, which computes ``flux * gain / exptime`` from the header, gets electrons per second exactly
once; the read noise cards are in electrons already.

Which frames: ``instruments`` in the config (``quantum_where``): the planner plans ISR for those only, and
the science tasks read ``[postIsrImage, raw]``, the ISR'd frame where there is one. A frame its observatory
already reduced (an LCO BANZAI e91 frame) is refused, never reduced twice.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from ...datastore.image import MASK_BITS, Image
from ...pipeline.connections import Connections, Input, Output, PrerequisiteInput
from ...pipeline.task import PipelineTask, Resources, TaskConfig
from .detector import Detector, detector_info, translator_for

__all__ = ["IsrConfig", "IsrConnections", "IsrTask", "isr_image"]

BAD, SAT = MASK_BITS["BAD"], MASK_BITS["SAT"]
HINT = "run pipelines/calib.yaml over the calibration frames, then openastro-butler certify-calibrations"


def _interpolate(data: np.ndarray, bad: np.ndarray, size: int = 5) -> np.ndarray:
    """``data`` with ``bad`` pixels replaced by the mean of the good ones in a ``size`` x ``size`` box."""
    if not bad.any():
        return data
    from scipy import ndimage  # here: planning imports this module, and scipy costs it a quarter second

    good = (~bad).astype(np.float64)
    num = ndimage.uniform_filter(np.where(bad, 0.0, data), size, mode="nearest")
    den = ndimage.uniform_filter(good, size, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        fill = num / den
    out = data.copy()
    out[bad] = np.where(np.isfinite(fill[bad]), fill[bad], 0.0)
    return out


def _set_cards(header, keys: list[str], value: float, comment: str) -> None:
    """Set every configured card that is present (the first when none is), so the translator reads ``value``."""
    present = [k for k in keys if k in header]
    for k in present or keys[:1]:
        header[k] = (value, comment)


def isr_image(raw: Image, bias: Image, dark: Image, flat: Image, det: Detector) -> Image:
    """The kernel: see the module docstring. All planes must have the raw's shape."""
    shape = raw.data.shape
    for name, im in (("masterBias", bias), ("masterDark", dark), ("masterFlat", flat)):
        if im.data.shape != shape:
            raise ValueError(f"{name} has shape {im.data.shape}, the frame {shape}: not the same detector format")
    adu = np.asarray(raw.data, dtype=np.float64)
    b = np.asarray(bias.data, dtype=np.float64)
    f = np.asarray(flat.data, dtype=np.float64)
    saturated = adu >= det.saturation_adu
    counted = (adu - b - np.asarray(dark.data, dtype=np.float64) * det.exptime) * det.gain  # e-, before the flat
    bad = ~np.isfinite(counted) | ~np.isfinite(f) | (f <= 0)
    for im in (bias, dark, flat):
        if im.mask is not None:
            bad |= (np.asarray(im.mask) & BAD) != 0
    fsafe = np.where(bad, 1.0, f)
    electrons = counted / fsafe
    rn = det.read_noise if det.read_noise is not None else float(bias.header.get("RNMEAS", 0.0))
    variance = (np.clip(counted, 0.0, None) + rn ** 2) / fsafe ** 2
    electrons = _interpolate(electrons, bad & ~saturated)
    variance = _interpolate(variance, bad & ~saturated)
    good_f = f[~bad]
    sat_e = (det.saturation_adu - float(np.nanmin(b))) * det.gain / (float(good_f.min()) if good_f.size else 1.0)
    if np.isfinite(sat_e):
        electrons[saturated] = sat_e
    mask = np.zeros(shape, np.int32)
    mask[bad] |= BAD
    mask[saturated] |= SAT
    header = raw.header.copy()
    for key in ("BZERO", "BSCALE", "BLANK"):
        header.remove(key, ignore_missing=True)
    tr = translator_for(header)
    gain_keys = tr.config.keys.gain if tr is not None else ["GAIN"]
    sat_keys = tr.config.keys.saturation if tr is not None else ["SATURATE"]
    header["ISRGAIN"] = (det.gain, "[e-/ADU] gain applied by ISR")
    _set_cards(header, gain_keys, 1.0, "[e-/unit] pixels are electrons (ISR)")
    if np.isfinite(sat_e):
        _set_cards(header, sat_keys, float(sat_e), "[e-] saturation level after ISR")
    if det.read_noise is None and rn > 0:  # the camera wrote none: the master bias measured it
        _set_cards(header, tr.config.keys.read_noise if tr is not None else ["RDNOISE"], rn,
                   "[e-] read noise measured on the master bias (ISR)")
    header["BUNIT"] = ("electron", "pixel unit after ISR")
    header["ISR"] = (True, "bias, dark, flat, gain applied; BAD/SAT masked")
    header["NBADPIX"] = (int(bad.sum()), "pixels masked BAD and interpolated by ISR")
    return Image(electrons.astype(np.float32), header, mask, variance.astype(np.float32))


class IsrConfig(TaskConfig):
    instruments: list[str] = Field(default_factory=list, description=(
        "Instruments whose frames need ISR (raw ADU from the camera). Others - already reduced by their "
        "observatory, like LCO BANZAI frames - get no isr quanta and are read as they are."))
    default_gain: float | None = Field(None, gt=0, description="Gain (e-/ADU) for headers without one.")
    default_read_noise: float | None = Field(None, ge=0, description="Read noise (e-) for headers without one.")
    default_saturation: float | None = Field(None, gt=0, description="Saturation (ADU) for headers without one.")

    @field_validator("instruments")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not re.fullmatch(r"[A-Za-z0-9_.+-]+", v)]
        if bad:
            raise ValueError(f"not instrument names: {bad} (letters, digits and _ . + - only)")
        return value


class IsrConnections(Connections):
    raw = Input("raw", ("instrument", "exposure"), "RawImage", doc="The raw frame (ADU).")
    masterBias = PrerequisiteInput("masterBias", ("instrument",), "Image", calibration=True, hint=HINT,
                                   doc="Certified master bias valid for the frame's night.")
    masterDark = PrerequisiteInput("masterDark", ("instrument",), "Image", calibration=True, hint=HINT,
                                   doc="Certified master dark rate valid for the frame's night.")
    masterFlat = PrerequisiteInput("masterFlat", ("instrument", "band"), "Image", calibration=True, hint=HINT,
                                   doc="Certified master flat of the frame's band valid for its night.")
    postIsrImage = Output("postIsrImage", ("instrument", "exposure"), "RawImage",
                          doc="The frame in electrons, flat-fielded, with MASK and VARIANCE planes.")


class IsrTask(PipelineTask):
    """Bias, dark, flat, gain, saturation and bad pixels: a camera's raw frame made ready for measurement."""

    dimensions = ("instrument", "exposure")
    Config = IsrConfig
    Connections = IsrConnections
    resources = Resources(cores=1, memory_mb=1024, walltime_min=10)

    @classmethod
    def quantum_where(cls, config: TaskConfig) -> str | None:
        names = list(getattr(config, "instruments", []))
        if not names:
            return None  # no instrument named: ISR plans nothing, the science tasks read the raws
        return "instrument IN (" + ", ".join(f"'{n}'" for n in names) + ")"

    def run(self, raw: Image, masterBias: Image, masterDark: Image, masterFlat: Image, data_id=None) -> dict[str, Any]:
        c, what = self.config, f"isr {data_id or ''}".strip()
        det = detector_info(raw.header, raw.data, default_gain=c.default_gain, default_read_noise=c.default_read_noise,
                            default_saturation=c.default_saturation, where=what)
        if det.reduced:
            raise ValueError(f"{what}: the frame was already reduced by its observatory (e.g. BANZAI RLEVEL 91); "
                             "leave its instrument out of isr:instruments")
        if raw.header.get("ISR"):
            raise ValueError(f"{what}: the frame has been through ISR already (header ISR = T)")
        out = isr_image(raw, masterBias, masterDark, masterFlat, det)
        self.log.info("%s: gain %.3f e-/ADU, exptime %.1f s, %d bad, %d saturated pixels", what, det.gain,
                      det.exptime, int((out.mask & BAD).astype(bool).sum()), int((out.mask & SAT).astype(bool).sum()))
        return {"postIsrImage": out}
