"""Image branch: frames of many telescopes onto one grid, on one photometric scale, stacked.

``makeRefGrid`` -> ``warp`` -> ``normalize`` -> ``coadd`` (and ``templateCoadd``, the same task over early epochs).

===============  ============================================================================================
``reproject``    the field's reference grid (``MakeRefGridTask``) and each frame warped onto it (``WarpTask``)
``normalize``    sky subtracted, flux scaled to a common zero-point (``NormalizeTask``)
``coadd``        the task: epoch selection, checks, products (``CoaddTask``)
``coadd_kernel`` ``coadd()``: the SNR^2-weighted, sigma-clipped mean in memory-capped tiles, any array provider
===============  ============================================================================================

(Plate solving and photometric calibration, which every branch needs first, are ``tasks.astrometry`` and
``tasks.photometry``.)
"""

from typing import Any

from ..._lazy import lazy_exports

__all__ = ["CoaddConfig", "CoaddResult", "CoaddTask", "MakeRefGridTask", "NormalizeTask", "NpyFrame", "WarpTask",
           "choose_reference", "estimate_background", "fits_frame", "flux_scale", "footprint_corners",
           "frame_weights", "grid_from_refgrid", "grid_wcs", "normalize_image", "pixel_zero_point", "plan_tiles",
           "save_npy_frame", "select_epochs", "warp_image"]
_get = lazy_exports(__name__, {
    "coadd": ("CoaddConfig", "CoaddTask", "select_epochs"),
    "coadd_kernel": ("CoaddResult", "NpyFrame", "fits_frame", "frame_weights", "plan_tiles", "save_npy_frame"),
    "normalize": ("NormalizeTask", "estimate_background", "flux_scale", "normalize_image", "pixel_zero_point"),
    "reproject": ("MakeRefGridTask", "WarpTask", "choose_reference", "footprint_corners", "grid_from_refgrid",
        "grid_wcs", "warp_image"),
})


def __getattr__(name: str) -> Any:
    return _get(name)
