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

from .combine import CorrectedFrame, combine, robust_level, robust_sigma
from .detector import Detector, detector_info
from .isr import IsrConfig, IsrTask, isr_image
from .masters import MasterBiasTask, MasterConfig, MasterDarkTask, MasterFlatTask, hot_pixels, low_pixels

__all__ = ["CorrectedFrame", "Detector", "IsrConfig", "IsrTask", "MasterBiasTask", "MasterConfig", "MasterDarkTask",
           "MasterFlatTask", "combine", "detector_info", "hot_pixels", "isr_image", "low_pixels", "robust_level",
           "robust_sigma"]
