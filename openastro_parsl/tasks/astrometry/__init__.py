"""Astrometry branch: a verified WCS for every raw frame (label ``plateSolve``), or a ``wcs_failed`` record.

==========  ==============================================================================================
``solve``   ``PlateSolveTask`` and ``plate_solve``: header-WCS check, then the engines, one record per frame
``sources`` what a solver starts from: sep detections (``Sources``) and the header's pointing hints (``Hints``)
``quads``   the built-in engine: geometric hashing of star quads (numpy/scipy)
``net``     the astrometry.net engine: ``solve-field`` with index files built from the local catalogue
``fit``     shared back half: catalogue matching, WCS fitting (TAN + SIP), verification, false-alarm odds
==========  ==============================================================================================
"""

from typing import Any

from ..._lazy import lazy_exports

__all__ = ["AstrometryNetMissing", "Catalogue", "Hints", "NetSettings", "PlateSolveConfig", "PlateSolveConnections",
           "PlateSolveTask", "QuadSettings", "SolveResult", "Sources", "Verification", "detect_sources",
           "engines_for", "fit_wcs", "hints_from", "plate_solve", "refine", "solve_astrometry_net", "solve_quads",
           "verify", "wcs_difference_rms"]
_get = lazy_exports(__name__, {
    "fit": ("Catalogue", "SolveResult", "Verification", "fit_wcs", "refine", "verify", "wcs_difference_rms"),
    "net": ("AstrometryNetMissing", "NetSettings", "solve_astrometry_net"),
    "quads": ("QuadSettings", "solve_quads"),
    "solve": ("PlateSolveConfig", "PlateSolveConnections", "PlateSolveTask", "engines_for", "plate_solve"),
    "sources": ("Hints", "Sources", "detect_sources", "hints_from"),
})


def __getattr__(name: str) -> Any:
    return _get(name)
