"""The sky of the two images before subtraction and the residual sky of the difference after it (sep meshes)."""

from __future__ import annotations

import numpy as np

__all__ = ["difference_sky", "sky_background"]


def sky_background(data: np.ndarray, bad: np.ndarray, box: int = 64, dilate: int = 4) -> tuple[np.ndarray, float]:
    """Smooth sky map and its rms (sep), in two passes: the second with sources (above 1.5 sigma, grown by
    ``dilate`` px for their wings) masked, so crowded fields and bright halos do not lift the sky."""
    import sep
    from scipy.ndimage import binary_dilation

    ny, nx = data.shape
    b = int(max(16, min(box, ny // 2, nx // 2)))
    work = np.ascontiguousarray(np.where(bad, 0.0, data), dtype=np.float64)
    m = np.ascontiguousarray(bad)
    bkg = sep.Background(work, mask=m, bw=b, bh=b, fw=3, fh=3)
    try:
        _, seg = sep.extract(work - bkg.back(), 1.5, err=bkg.globalrms, mask=m, minarea=5, segmentation_map=True)
    except Exception:  # too many sources for sep's buffers: keep the first pass
        return bkg.back(), float(bkg.globalrms)
    src = binary_dilation(seg > 0, iterations=dilate) if dilate else seg > 0
    if np.mean(src[~bad]) < 0.75 if (~bad).any() else False:
        bkg = sep.Background(work, mask=np.ascontiguousarray(bad | src), bw=b, bh=b, fw=3, fh=3)
    return bkg.back(), float(bkg.globalrms)


def difference_sky(diff, bad, sci, var_s, tmpl, var_t, fwhm, box) -> np.ndarray:
    """Smooth residual sky of the difference (the two images' sky estimates never agree exactly), measured
    away from every source of either image.

    sep's mesh drops cells that are mostly masked; on a small frame whose footprint and sources mask most of
    every cell it returns a flat zero, so whatever constant the mesh leaves (sigma-clipped median of the
    unmasked pixels) is taken out as well. The mesh stays coarse: a fine one would eat faint point sources
    that no mask covers (below 3 sigma a pixel), the very transients the difference is for."""
    import sep
    from astropy.stats import sigma_clipped_stats
    from scipy.ndimage import binary_dilation

    grow = int(max(2, round(1.5 * fwhm)))
    sci_src = np.abs(sci) > 3 * np.sqrt(var_s)
    tmpl_src = np.abs(tmpl) > 3 * np.sqrt(np.maximum(var_t, 1e-30))
    m = bad | binary_dilation(sci_src | tmpl_src, iterations=grow)
    if (~bad).any() and np.mean(m[~bad]) > 0.8:
        # a template whose variance understates its noise marks nearly every pixel as a source
        m = bad | binary_dilation(sci_src, iterations=grow)
    if (~m).sum() < 100:
        return np.zeros_like(diff)
    ny, nx = diff.shape
    b = int(max(16, min(box, ny // 2, nx // 2)))
    sky = sep.Background(np.ascontiguousarray(np.where(m, 0.0, diff)), mask=np.ascontiguousarray(m),
                         bw=b, bh=b, fw=3, fh=3).back()
    rest = sigma_clipped_stats((diff - sky)[~m], sigma=3.0, maxiters=10)[1]
    return sky + rest
