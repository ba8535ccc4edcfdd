"""Photometry branch: photometric calibration of every frame (``calibrate``), of every field's frames together
(``fieldCalibration``) and of every instrument through time (``zeropointHistory``).

==============  ===============================================================================================
``calibrate``   ``CalibrateTask`` and ``calibrate_frame``: extract, match, fit, package calexp / src / photoCalib
``extraction``  sep background, variance and mask planes, detection, centroids, aperture photometry, source flags
``psf``         the frame's Moffat PSF (fitted on its stars) and the aperture correction it implies
``matching``    sources <-> reference catalogue through the WCS, crowded catalogue stars
``zeropoint``   the sigma-clipped zero-point + colour-term fit; pooled colour terms, extinction
``ubercal``     the joint fit of a field's frames: zero-points, colour terms, star magnitudes tied to the catalogue
``fieldcal``    ``FieldCalibrationTask`` (``fieldCalibration``): the joint fit over a field's ``src`` tables
``history``     ``ZeropointHistoryTask``: one instrument and band through time
==============  ===============================================================================================

The zero-point convention (counts_e = exptime * 10**(-0.4 (m + CT (g - r) - zp))) is documented in
``calibrate``. Exposure metadata come from ``astro.observation``, the Moffat profile from ``astro.psf``.
"""

from .calibrate import CalibrateConfig, CalibrateConnections, CalibrateTask, Calibration, calibrate_frame, solution_wcs
from .extraction import SOURCE_FLAGS, Extraction, Planes, detect, extract_sources, make_planes
from .fieldcal import (
    FieldCalibrationConfig,
    FieldCalibrationConnections,
    FieldCalibrationTask,
    FieldMeasurements,
    field_measurements,
)
from .history import ZeropointHistoryConfig, ZeropointHistoryConnections, ZeropointHistoryTask
from .matching import crowded_references, match_catalogue
from .psf import ApertureCorrection, aperture_correction, fit_moffat, frame_psf, model_aperture_fraction
from .ubercal import FieldFit, fit_field
from .zeropoint import ZeropointFit, fit_extinction, fit_zeropoint, pooled_colour_term

__all__ = ["SOURCE_FLAGS", "ApertureCorrection", "CalibrateConfig", "CalibrateConnections", "CalibrateTask",
           "Calibration", "Extraction", "FieldCalibrationConfig", "FieldCalibrationConnections",
           "FieldCalibrationTask", "FieldFit", "FieldMeasurements", "Planes", "ZeropointFit", "ZeropointHistoryConfig",
           "ZeropointHistoryConnections", "ZeropointHistoryTask", "aperture_correction", "calibrate_frame",
           "crowded_references", "detect", "extract_sources", "field_measurements", "fit_extinction", "fit_field", "fit_moffat", "fit_zeropoint",
           "frame_psf", "make_planes", "match_catalogue", "model_aperture_fraction", "pooled_colour_term",
           "solution_wcs"]
