"""Reprojection onto a field's common pixel grid: choose the grid (``makeRefGrid``), warp each frame (``warp``).

Heterogeneous telescopes only stack once every frame sits on one pixel grid. The grid is the reference
frame's own (smallest pixel scale keeps every frame's resolution; best seeing breaks ties), optionally grown
to the union of the field's footprints. Pixels are resampled with the ``reproject`` package on the CPU;
variance and mask planes travel with the pixels, and the parts of the grid a frame does not cover are flagged
``NO_DATA``.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from ...astro.wcs import pixel_scale_arcsec, wcs_from_cards
from ...datastore.image import MASK_BITS, Image
from ...pipeline.connections import Connections, Input, Output
from ...pipeline.task import NoWorkFound, PipelineTask, Resources, TaskConfig

if TYPE_CHECKING:  # astropy.wcs loads in ~0.5 s: imported where a WCS is built, not by the planner
    from astropy.wcs import WCS

__all__ = ["choose_reference", "footprint_corners", "grid_from_refgrid", "grid_wcs", "warp_image", "MakeRefGridTask",
           "WarpTask"]


# --------------------------------------------------------------------------------------------------------------
# Kernels (plain functions: testable without a task, usable from notebooks)
# --------------------------------------------------------------------------------------------------------------

def choose_reference(frames: list[dict], scale_tolerance: float = 0.02) -> tuple[int, str]:
    """Index of the reference frame and the reason, as recorded in ``refGrid``.

    ``frames``: dicts with ``pixel_scale_arcsec``, ``fwhm_pix``, ``instrument``, ``exposure``. Smallest pixel
    scale first (finest sampling, nobody is degraded); among frames within ``scale_tolerance`` (relative) of
    it, the best seeing in arcsec; then the lowest (instrument, exposure) so the choice is deterministic.
    """
    if not frames:
        raise ValueError("no frames to choose a reference from")
    scales = np.array([float(f["pixel_scale_arcsec"]) for f in frames])
    smin = float(scales.min())
    tied = [i for i in range(len(frames)) if scales[i] <= smin * (1.0 + scale_tolerance)]
    seeing = {i: float(frames[i].get("fwhm_pix") or np.inf) * scales[i] for i in tied}
    best = min(tied, key=lambda i: (seeing[i], str(frames[i]["instrument"]), int(frames[i]["exposure"])))
    f = frames[best]
    reason = (f"smallest pixel scale {scales[best]:.3f} arcsec/px ({f['instrument']}) among {len(frames)} frames")
    if len(tied) > 1:
        reason += (f"; best seeing {seeing[best]:.2f} arcsec among the {len(tied)} frames within "
                   f"{100 * scale_tolerance:g}% of that scale")
    return best, reason


def grid_wcs(ref: WCS, ref_shape: tuple[int, int], footprints: list[np.ndarray] | None = None,
             margin_px: int = 0, max_size: int = 8192) -> tuple[WCS, tuple[int, int]]:
    """The grid: the reference's projection, tangent point, scale and orientation, without distortion terms.

    With ``footprints`` (each an (n, 2) array of RA/Dec corners) the grid grows to their union; otherwise it
    is the reference frame's own ``ref_shape``. ``margin_px`` pads every side; ``max_size`` caps each axis
    (the excess is trimmed symmetrically) so a stray pointing cannot ask for a huge co-add.
    """
    from astropy.wcs import WCS

    ref = ref.celestial
    out = WCS(naxis=2)
    out.wcs.ctype = [c[:8] for c in ref.wcs.ctype]  # "RA---TAN-SIP" -> "RA---TAN"
    out.wcs.crval = ref.wcs.crval
    out.wcs.cd = ref.pixel_scale_matrix
    out.wcs.radesys = ref.wcs.radesys or "ICRS"
    out.wcs.crpix = ref.wcs.crpix
    out.wcs.set()
    ny, nx = ref_shape
    x0, y0, x1, y1 = -0.5, -0.5, nx - 0.5, ny - 0.5  # pixel-edge bounds, 0-based centres
    if footprints:
        pts = np.vstack(footprints)
        px, py = out.wcs_world2pix(pts[:, 0], pts[:, 1], 0)
        x0, x1 = min(x0, float(np.min(px))), max(x1, float(np.max(px)))
        y0, y1 = min(y0, float(np.min(py))), max(y1, float(np.max(py)))
    x0, y0, x1, y1 = x0 - margin_px, y0 - margin_px, x1 + margin_px, y1 + margin_px
    ix0, iy0 = int(math.floor(x0 + 0.5)), int(math.floor(y0 + 0.5))
    nxo, nyo = int(math.ceil(x1 + 0.5)) - ix0, int(math.ceil(y1 + 0.5)) - iy0
    if nxo > max_size:
        ix0 += (nxo - max_size) // 2
        nxo = max_size
    if nyo > max_size:
        iy0 += (nyo - max_size) // 2
        nyo = max_size
    out.wcs.crpix = [ref.wcs.crpix[0] - ix0, ref.wcs.crpix[1] - iy0]
    out.wcs.set()
    return out, (nyo, nxo)


def footprint_corners(wcs: WCS, shape: tuple[int, int]) -> np.ndarray:
    """RA/Dec (deg) of a frame's four outer pixel corners, as an (4, 2) array."""
    ny, nx = shape
    x = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
    y = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
    ra, dec = wcs.celestial.wcs_pix2world(x, y, 0)
    return np.column_stack([ra, dec])


def grid_from_refgrid(ref_grid: dict) -> tuple[WCS, tuple[int, int]]:
    """The grid WCS and (ny, nx) shape stored in a ``refGrid`` dataset."""
    return wcs_from_cards(ref_grid["wcs"]), (int(ref_grid["shape"][0]), int(ref_grid["shape"][1]))


def _reproject(method: str, stack: np.ndarray, wcs_in: WCS, wcs_out: WCS, shape: tuple[int, int], order: str,
               roundtrip: bool = True):
    """Reproject a (planes, ny, nx) stack; coordinates are computed once for all planes."""
    from astropy.wcs import FITSFixedWarning
    from reproject import reproject_adaptive, reproject_exact, reproject_interp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        if method == "interp":
            return reproject_interp((stack, wcs_in), wcs_out, shape_out=shape, order=order,
                                    roundtrip_coords=roundtrip)
        if method == "exact":
            return reproject_exact((stack, wcs_in), wcs_out, shape_out=shape)
        if method == "adaptive":
            return reproject_adaptive((stack, wcs_in), wcs_out, shape_out=shape, conserve_flux=False,
                                      boundary_mode="strict", roundtrip_coords=roundtrip)
    raise ValueError(f"unknown reprojection method {method!r}: interp, exact or adaptive")


def warp_image(image: Image, wcs_out: WCS, shape: tuple[int, int], *, method: str = "interp",
               order: str = "bilinear", min_footprint: float = 0.999, roundtrip: bool = True) -> Image:
    """Resample ``image`` (pixels, variance, mask) onto ``wcs_out``/``shape``; flux is conserved.

    ``reproject`` returns surface brightness (value per input pixel); pixels are multiplied by the pixel-area
    ratio a = A_out/A_in so a star's summed flux is unchanged. The variance plane is reprojected with the same
    method and scaled by a^2 (for ``exact``/``adaptive``, which average ~a input pixels when a > 1, divided by
    a as well): it is the per-pixel variance of the resampled values, ignoring that resampling correlates
    neighbouring pixels. For ``interp`` it is an upper bound per pixel (bilinear weights average the noise
    down by up to 4x at half-pixel offsets); when upsampling (a < 1) neighbouring grid pixels share the same
    input noise, so the variance of a sum over an aperture exceeds the plane's sum by up to 1/a (``WARPAREA``
    in the header says by how much). Each mask bit set in the input is reprojected as a 0/1 plane with the
    pixels (one coordinate transform for all planes) and set wherever a flagged input pixel contributes;
    input pixels with a non-finite value or variance count as ``BAD``. Pixels outside the footprint become
    NaN with ``NO_DATA``. ``roundtrip`` makes ``reproject`` check every
    coordinate by transforming it back (safe far from the tangent point, about twice the cost).
    """
    from astropy.wcs.utils import proj_plane_pixel_area

    wcs_in = image.wcs
    if wcs_in is None:
        raise ValueError("image has no celestial WCS in its header")
    if image.variance is None:
        raise ValueError("image has no VARIANCE plane")
    data = np.array(image.data, dtype=np.float64)
    var = np.array(image.variance, dtype=np.float64)
    m = np.zeros(data.shape, np.int64) if image.mask is None else np.asarray(image.mask, dtype=np.int64)
    invalid = ~np.isfinite(data) | ~np.isfinite(var)  # e.g. calibrate's infinite variance on bad pixels
    if invalid.any():  # flag them BAD rather than let NaN/inf spread through the interpolation
        data[invalid], var[invalid] = 0.0, 0.0
        m = m | np.where(invalid, MASK_BITS["BAD"], 0)
    bits = [b for b in MASK_BITS.values() if np.any(m & b)]
    planes = [data, var] + [((m & b) != 0).astype(np.float64) for b in bits]
    del data, var, m
    vals, foot = _reproject(method, np.stack(planes), wcs_in, wcs_out, shape, order, roundtrip)
    del planes
    foot = np.min(foot, axis=0) if foot.ndim == 3 else foot
    a = proj_plane_pixel_area(wcs_out.celestial) / proj_plane_pixel_area(wcs_in.celestial)
    out = vals[0] * a
    var_out = vals[1] * a * a / (max(a, 1.0) if method in ("exact", "adaptive") else 1.0)
    mask = np.zeros(shape, dtype=np.int32)
    for b, plane in zip(bits, vals[2:], strict=True):
        mask[np.nan_to_num(plane, nan=0.0) > 1e-6] |= b
    nodata = (foot < min_footprint) | ~np.isfinite(out) | ~np.isfinite(var_out)
    mask[nodata] |= MASK_BITS["NO_DATA"]
    out[nodata] = np.nan
    var_out[nodata] = np.nan

    header = image.header.copy()
    for key in ("NAXIS1", "NAXIS2"):
        header.remove(key, ignore_missing=True)
    warped = Image(out.astype(np.float32), header, mask, var_out.astype(np.float32))
    warped.set_wcs(wcs_out)
    warped.header["WARPMETH"] = (method, "reproject method onto the field grid")
    warped.header["WARPAREA"] = (float(a), "pixel area ratio out/in (flux scale applied)")
    if "FWHMPIX" in header:
        warped.header["FWHMGRID"] = (float(header["FWHMPIX"]) / math.sqrt(a), "[px] seeing FWHM on the grid")
    warped.header["COVERFRC"] = (float(np.mean(~nodata)), "fraction of the grid covered by this frame")
    return warped


# --------------------------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------------------------

class MakeRefGridConfig(TaskConfig):
    scale_tolerance: float = Field(0.02, ge=0, description="Frames whose pixel scale is within this fraction of "
                                   "the smallest tie, and the best seeing among them wins.")
    extent: Literal["reference", "union"] = Field("reference", description="Grid size: the reference frame's "
                                                  "own footprint, or the union of every frame's footprint.")
    margin_px: int = Field(0, ge=0, description="Pixels added on every side of the grid.")
    max_size: int = Field(8192, ge=16, description="Largest grid axis (pixels); larger unions are trimmed.")


class MakeRefGridConnections(Connections):
    calibs = Input("photoCalib", ("instrument", "exposure"), "StructuredData", multiple=True,
                   doc="Per-frame calibration: pixel scale, seeing, shape.")
    wcs_solutions = Input("wcsSolution", ("instrument", "exposure"), "StructuredData", multiple=True,
                          doc="Per-frame WCS solutions (frames that failed are skipped).")
    ref_grid = Output("refGrid", ("field",), "StructuredData", doc="The field's common pixel grid.")


def _key(d: dict) -> tuple[str, int]:
    return str(d["instrument"]), int(d["exposure"])


class MakeRefGridTask(PipelineTask):
    """Choose the field's reference frame and write its pixel grid (WCS cards, shape, reason)."""

    dimensions = ("field",)
    Config = MakeRefGridConfig
    Connections = MakeRefGridConnections
    resources = Resources(cores=1, memory_mb=512, walltime_min=5)

    def run(self, calibs, wcs_solutions, data_ids=None, data_id=None):
        where = f"field {dict(data_id)['field']}" if data_id else "field"
        ids = data_ids or {}
        calib_ids = ids.get("calibs") or calibs
        sol_ids = ids.get("wcs_solutions")
        if sol_ids is None:  # called directly: solutions carry their ids, or come in the calibs' order
            if len(wcs_solutions) != len(calibs):
                raise ValueError(f"{where}: {len(wcs_solutions)} WCS solutions for {len(calibs)} calibrations "
                                 "and no data IDs to pair them")
            sol_ids = [s if "instrument" in s else c for s, c in zip(wcs_solutions, calib_ids, strict=True)]
        solutions = {_key(i): s for i, s in zip(sol_ids, wcs_solutions, strict=True)}
        frames = []
        for cid, c in zip(calib_ids, calibs, strict=True):
            c = {**c, "instrument": cid["instrument"], "exposure": cid["exposure"]}
            sol = solutions.get(_key(c))
            if sol is None or sol.get("status") == "wcs_failed" or not sol.get("wcs"):
                self.log.info("%s %s: no WCS solution, not a grid candidate", where, _key(c))
                continue
            try:
                w = wcs_from_cards(sol["wcs"])
            except Exception as exc:  # noqa: BLE001 - one bad solution must not stop the field
                self.log.warning("%s %s: unusable WCS cards (%s), skipped", where, _key(c), exc)
                continue
            frames.append({**c, "pixel_scale_arcsec": pixel_scale_arcsec(w), "_wcs": w})
        if not frames:
            raise NoWorkFound(f"{where}: no frame with both a photometric calibration and a WCS")
        best, reason = choose_reference(frames, self.config.scale_tolerance)
        ref = frames[best]
        shape = tuple(int(n) for n in ref["shape"])
        feet = None
        if self.config.extent == "union":
            feet = [footprint_corners(f["_wcs"], tuple(int(n) for n in f["shape"])) for f in frames]
        w, gshape = grid_wcs(ref["_wcs"], shape, feet, self.config.margin_px, self.config.max_size)
        cards = {k: v for k, v in w.to_header().items() if k not in ("DATEREF", "MJDREFI", "MJDREFF", "MJDREF")}
        self.log.info("%s: reference %s %s, grid %s; %s", where, ref["instrument"], ref["exposure"], gshape, reason)
        return {"ref_grid": {
            "wcs": cards, "shape": list(gshape),
            "reference": {"instrument": str(ref["instrument"]), "exposure": int(ref["exposure"])},
            "pixel_scale_arcsec": float(ref["pixel_scale_arcsec"]),
            "fwhm_pix": float(ref.get("fwhm_pix") or float("nan")),
            "reason": reason, "extent": self.config.extent, "n_candidates": len(frames),
        }}


class WarpConfig(TaskConfig):
    method: Literal["interp", "exact", "adaptive"] = Field(
        "interp", description="reproject algorithm: interp (fast, for stacking), exact (flux-conserving "
        "spherical polygons, 5-20x slower), adaptive (anti-aliased, DeForest 2004).")
    order: Literal["nearest-neighbor", "bilinear", "biquadratic", "bicubic"] = Field(
        "bilinear", description="Interpolation order for method=interp.")
    min_footprint: float = Field(0.999, gt=0, le=1, description="Grid pixels covered less than this are NO_DATA.")
    roundtrip_coords: bool = Field(True, description="Check each mapped coordinate by a round trip (drops "
                                   "pixels where a projection is not invertible); False halves the cost.")


class WarpConnections(Connections):
    calexp = Input("calexp", ("instrument", "exposure"), "Image", doc="Calibrated frame with its solved WCS.")
    ref_grid = Input("refGrid", ("field",), "StructuredData", doc="The field's common grid.")
    warped = Output("warpedExp", ("instrument", "exposure"), "Image", doc="The frame on the field grid.")


class WarpTask(PipelineTask):
    """Resample one calibrated frame onto its field's grid (pixels, variance, mask), on the CPU."""

    dimensions = ("instrument", "exposure")
    Config = WarpConfig
    Connections = WarpConnections
    resources = Resources(cores=1, memory_mb=2048, walltime_min=20)

    def run(self, calexp, ref_grid, data_id=None):
        where = ", ".join(f"{k}={v}" for k, v in dict(data_id).items()) if data_id else "calexp"
        if calexp.wcs is None:
            raise ValueError(f"{where}: calexp has no WCS in its header; cannot reproject")
        if calexp.variance is None:
            raise ValueError(f"{where}: calexp has no VARIANCE plane")
        wcs_out, shape = grid_from_refgrid(ref_grid)
        ny, nx = calexp.shape
        corners = footprint_corners(calexp.wcs, (ny, nx))
        px, py = wcs_out.wcs_world2pix(corners[:, 0], corners[:, 1], 0)
        if px.max() < -0.5 or py.max() < -0.5 or px.min() > shape[1] - 0.5 or py.min() > shape[0] - 0.5:
            raise NoWorkFound(f"{where}: frame does not overlap the field grid")
        warped = warp_image(calexp, wcs_out, shape, method=self.config.method, order=self.config.order,
                            min_footprint=self.config.min_footprint, roundtrip=self.config.roundtrip_coords)
        cover = warped.header["COVERFRC"]
        if cover == 0:
            raise NoWorkFound(f"{where}: frame covers no pixel of the field grid")
        warped.header["REFINST"] = (ref_grid["reference"]["instrument"], "grid reference instrument")
        warped.header["REFEXP"] = (int(ref_grid["reference"]["exposure"]), "grid reference exposure")
        self.log.info("%s: warped (%s) onto %s grid, %.0f%% covered, area ratio %.3f", where,
                      self.config.method, shape, 100 * cover, warped.header["WARPAREA"])
        return {"warped": warped}
