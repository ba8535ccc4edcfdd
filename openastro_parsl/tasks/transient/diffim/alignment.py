"""The template on the science frame's grid: resampled (flux-conserving), flux-scaled, with its variance."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from ....datastore.image import MASK_BITS, Image

if TYPE_CHECKING:
    from astropy.wcs import WCS

__all__ = ["align_template"]


def _crop_to_footprint(twcs: WCS, tshape, wcs: WCS, shape, margin: int = 4):
    """(y0, y1, x0, x1) of the template pixels under the science frame (plus a margin): resampling only those
    makes the cost follow the science frame, not the (possibly much larger) template grid."""
    ny, nx = shape
    yy, xx = np.meshgrid(np.linspace(-0.5, ny - 0.5, 9), np.linspace(-0.5, nx - 0.5, 9), indexing="ij")
    ra, dec = wcs.wcs_pix2world(xx.ravel(), yy.ravel(), 0)
    tx, ty = twcs.wcs_world2pix(ra, dec, 0)
    tny, tnx = tshape
    if not (np.all(np.isfinite(tx)) and np.all(np.isfinite(ty))):
        return 0, tny, 0, tnx
    x0 = int(np.clip(np.floor(tx.min()) - margin, 0, tnx))
    x1 = int(np.clip(np.ceil(tx.max()) + margin + 1, 0, tnx))
    y0 = int(np.clip(np.floor(ty.min()) - margin, 0, tny))
    y1 = int(np.clip(np.ceil(ty.max()) + margin + 1, 0, tny))
    return y0, y1, x0, x1


def align_template(template: Image, wcs: WCS, shape: tuple[int, int], scale: float,
                   resample: str = "exact") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Template resampled onto (wcs, shape), flux per output pixel times ``scale``; its variance; no-data mask.

    ``exact`` (``reproject_exact``: each output pixel integrates the input pixels it overlaps) is what a
    coarser detector would have recorded, so it blurs least and conserves flux; ``interp`` (bicubic) is faster
    but aliases when the science pixels are much coarser. The variance plane is resampled bilinearly: the variance of a sum of
    ``r`` input pixels is ``r`` times their mean (``r`` = output / input pixel area); a finer output pixel
    (r < 1) carries r of an input pixel, so r^2.
    """
    from astropy.wcs.utils import proj_plane_pixel_area
    from reproject import reproject_exact, reproject_interp

    twcs = template.wcs
    if twcs is None:
        raise ValueError("templateCoadd has no celestial WCS")
    y0, y1, x0, x1 = _crop_to_footprint(twcs, template.shape, wcs, shape)
    if y1 - y0 < 2 or x1 - x0 < 2:
        return np.zeros(shape), np.zeros(shape), np.ones(shape, bool)
    twcs = twcs.slice((slice(y0, y1), slice(x0, x1)))
    data = np.asarray(template.data[y0:y1, x0:x1], dtype=np.float64).copy()
    nodata = ~np.isfinite(data)
    if template.mask is not None:
        nodata |= (np.asarray(template.mask[y0:y1, x0:x1]) & MASK_BITS["NO_DATA"]) != 0
    if template.variance is not None:
        var = np.asarray(template.variance[y0:y1, x0:x1], dtype=np.float64).copy()
        nodata |= ~np.isfinite(var)
    else:
        from astropy.stats import sigma_clipped_stats

        _, _, std = sigma_clipped_stats(data[~nodata], sigma=3.0, maxiters=5)
        var = np.full(data.shape, std**2)
    data[nodata] = np.nan
    var[nodata] = np.nan
    r = float(proj_plane_pixel_area(wcs.celestial)) / float(proj_plane_pixel_area(twcs.celestial))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if resample == "exact":
            out, foot = reproject_exact((data, twcs), wcs, shape_out=tuple(shape))
        elif resample == "interp":
            out, foot = reproject_interp((data, twcs), wcs, shape_out=tuple(shape), order="bicubic")
        else:
            raise ValueError(f"unknown resampling {resample!r}: exact or interp")
        vout, _ = reproject_interp((var, twcs), wcs, shape_out=tuple(shape), order="bilinear")
    t = out * r * scale
    v = vout * r * min(r, 1.0) * scale**2
    bad = ~(np.isfinite(t) & np.isfinite(v)) | (np.asarray(foot) < 0.999)
    t[bad] = 0.0
    v[bad] = 0.0
    return t, v, bad
