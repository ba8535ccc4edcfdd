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
``colour_terms`` an instrument's colour terms pooled over a repository's field fits (transformation coefficients)
==============  ===============================================================================================

The zero-point convention (counts_e = exptime * 10**(-0.4 (m + CT (g - r) - zp))) is documented in
``calibrate``. Exposure metadata come from ``astro.observation``, the Moffat profile from ``astro.psf``.
"""

from typing import Any

from ..._lazy import lazy_exports

__all__ = ["SOURCE_FLAGS", "ApertureCorrection", "CalibrateConfig", "CalibrateConnections", "CalibrateTask",
           "Calibration", "Extraction", "FieldCalibrationConfig", "FieldCalibrationConnections",
           "FieldCalibrationTask", "FieldFit", "FieldMeasurements", "Planes", "ZeropointFit",
           "ZeropointHistoryConfig", "ZeropointHistoryConnections", "ZeropointHistoryTask", "aperture_correction",
           "calibrate_frame", "colour_term_priors", "crowded_references", "detect", "extract_sources",
           "field_measurements",
           "fit_extinction", "fit_field", "fit_moffat", "fit_zeropoint", "frame_psf", "make_planes",
           "match_catalogue", "model_aperture_fraction", "override_file", "pool_colour_terms", "pooled_colour_term",
           "PooledColourTerm", "solution_wcs"]
_get = lazy_exports(__name__, {
    "calibrate": ("CalibrateConfig", "CalibrateConnections", "CalibrateTask", "Calibration", "calibrate_frame",
        "solution_wcs"),
    "colour_terms": ("PooledColourTerm", "override_file", "pool_colour_terms"),
    "extraction": ("SOURCE_FLAGS", "Extraction", "Planes", "detect", "extract_sources", "make_planes"),
    "fieldcal": ("FieldCalibrationConfig", "FieldCalibrationConnections", "FieldCalibrationTask", "FieldMeasurements",
        "colour_term_priors", "field_measurements"),
    "history": ("ZeropointHistoryConfig", "ZeropointHistoryConnections", "ZeropointHistoryTask"),
    "matching": ("crowded_references", "match_catalogue"),
    "psf": ("ApertureCorrection", "aperture_correction", "fit_moffat", "frame_psf", "model_aperture_fraction"),
    "ubercal": ("FieldFit", "fit_field"),
    "zeropoint": ("ZeropointFit", "fit_extinction", "fit_zeropoint", "pooled_colour_term"),
})


def __getattr__(name: str) -> Any:
    return _get(name)
