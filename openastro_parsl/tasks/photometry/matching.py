"""Sources <-> reference catalogue on the detector: one-to-one nearest matches through the WCS, crowded
catalogue stars."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from astropy.table import Table
    from astropy.wcs import WCS

__all__ = ["crowded_references", "match_catalogue"]


def match_catalogue(x, y, refcat: Table, wcs: WCS, *, radius_pix: float, refine: bool = True
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one nearest matches of sources to catalogue stars projected through the WCS (KD-tree in pixels).

    Returns (catalogue row index per source or -1, catalogue x, catalogue y). A median offset of the first
    matches is removed and the match redone, so a WCS a fraction of a pixel off does not lose stars.
    """
    from scipy.spatial import cKDTree

    n = len(x)
    idx = np.full(n, -1, dtype=np.int64)
    if n == 0 or len(refcat) == 0:
        return idx, np.zeros(0), np.zeros(0)
    cx, cy = wcs.all_world2pix(np.asarray(refcat["ra"], float), np.asarray(refcat["dec"], float), 0)
    ok = np.isfinite(cx) & np.isfinite(cy)
    cx, cy = np.where(ok, cx, -1e9), np.where(ok, cy, -1e9)
    tree = cKDTree(np.column_stack([cx, cy]))
    shift = np.zeros(2)
    for _ in range(2 if refine else 1):
        d, j = tree.query(np.column_stack([x - shift[0], y - shift[1]]), distance_upper_bound=radius_pix)
        hit = np.isfinite(d)
        # one-to-one: a catalogue star claimed twice keeps its nearest source
        order = np.argsort(np.where(hit, d, np.inf))
        taken: set[int] = set()
        idx[:] = -1
        for i in order:
            if not hit[i]:
                break
            if int(j[i]) not in taken:
                taken.add(int(j[i]))
                idx[i] = j[i]
        m = idx >= 0
        if m.sum() >= 3:
            shift = np.array([np.median(x[m] - cx[idx[m]]), np.median(y[m] - cy[idx[m]])])
    return idx, cx, cy


def crowded_references(cx, cy, mags, radius_pix: float, delta_mag: float = 2.5) -> np.ndarray:
    """Catalogue stars with a neighbour within ``radius_pix`` no more than ``delta_mag`` fainter."""
    from scipy.spatial import cKDTree

    out = np.zeros(len(cx), dtype=bool)
    if len(cx) < 2:
        return out
    good = np.isfinite(mags)
    tree = cKDTree(np.column_stack([cx, cy]))
    for i, nbrs in enumerate(tree.query_ball_point(np.column_stack([cx, cy]), radius_pix)):
        others = [k for k in nbrs if k != i and good[k]]
        if others and np.any(mags[others] < mags[i] + delta_mag):
            out[i] = True
    return out
