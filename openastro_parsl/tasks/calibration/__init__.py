"""Calibration branch: master bias, dark and flat from calibration frames, and ISR of raw science frames.

``pipelines/calib.yaml`` makes the masters; ``openastro-butler certify-calibrations`` gives them validity
ranges (nights) in a CALIBRATION collection; ``isr`` (in the science pipelines, for the instruments named in
its config) applies them (``docs/calibration.md``).

============  ==============================================================================================
``combine``   sigma-clipped mean of corrected frames in memory-capped tiles (on the co-add kernel)
``detector``  gain, read noise, saturation, exposure time and "already reduced" from a frame's header
``masters``   ``MasterBiasTask``, ``MasterDarkTask`` (rate, ADU/s; hot pixels), ``MasterFlatTask`` (per band)
``isr``       ``IsrTask`` and its kernel ``isr_image``: raw ADU -> flat-fielded electrons with MASK/VARIANCE
============  ==============================================================================================
"""

from typing import Any

from ..._lazy import lazy_exports

__all__ = ["CorrectedFrame", "Detector", "IsrConfig", "IsrTask", "MasterBiasTask", "MasterConfig", "MasterDarkTask",
           "MasterFlatTask", "combine", "detector_info", "hot_pixels", "isr_image", "low_pixels", "robust_level",
           "robust_sigma"]
_get = lazy_exports(__name__, {
    "combine": ("CorrectedFrame", "combine", "robust_level", "robust_sigma"),
    "detector": ("Detector", "detector_info"),
    "isr": ("IsrConfig", "IsrTask", "isr_image"),
    "masters": ("MasterBiasTask", "MasterConfig", "MasterDarkTask", "MasterFlatTask", "hot_pixels", "low_pixels"),
})


def __getattr__(name: str) -> Any:
    return _get(name)
