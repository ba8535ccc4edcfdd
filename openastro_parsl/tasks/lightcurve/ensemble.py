"""Ensemble differential photometry: per-frame zero-point corrections from the field's other stars.

A frame's own zero-point fit carries the noise of its few comparison stars and, with a free colour term, more;
for a small camera that is ~0.01 mag per frame, as large as a hot Jupiter's transit. Every star in the field
shares that frame's error, so the model (Honeycutt 1992, inhomogeneous ensemble photometry)

    m[frame, star] = M[star] + offset[frame] + noise

fitted to all frames of a field and band at once gives each frame's offset from dozens of star measurements
instead of its catalogue match, and ties instruments together through the stars they share. Stars that vary or
are badly measured earn an excess variance of their own and lose weight (as in Broeg et al. 2005's
synthetic comparison star); single deviant measurements (cosmic rays, blends) are sigma-clipped. The offsets
have zero weighted mean, so the calibrated scale is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class EnsembleSolution:
    offset: np.ndarray  # per frame, mag (subtract from the frame's calibrated magnitudes)
    offset_err: np.ndarray
    n_stars: np.ndarray  # comparison stars that constrain each frame's offset after clipping
    star_ids: np.ndarray
    star_mag: np.ndarray  # in the frames' calibration, shifted by their mean offset (the gauge)
    star_excess: np.ndarray  # extra scatter (mag) a star shows beyond its errors: variables stand out
    iterations: int


def solve_ensemble(frame: np.ndarray, star: np.ndarray, mag: np.ndarray, err: np.ndarray, n_frames: int, *,
                   clip_sigma: float = 4.0, max_iterations: int = 30, min_stars: int = 2,
                   tolerance: float = 1e-6) -> EnsembleSolution:
    """Fit ``mag = M[star] + offset[frame]`` to measurements given as parallel arrays.

    ``frame`` holds integers in ``[0, n_frames)``, ``star`` any hashable ids. Frames with fewer than
    ``min_stars`` usable comparison stars get offset 0 and an infinite error (left uncorrected).
    """
    frame = np.asarray(frame, dtype=np.int64)
    mag = np.asarray(mag, dtype=float)
    err = np.asarray(err, dtype=float)
    good = np.isfinite(mag) & np.isfinite(err) & (err > 0)
    star_ids, sidx = np.unique(np.asarray(star)[good], return_inverse=True)
    frame, mag, var = frame[good], mag[good], err[good] ** 2
    n_stars = len(star_ids)
    offset = np.zeros(n_frames)
    excess = np.zeros(n_stars)
    # a star measured once fits itself exactly and says nothing about its frame
    use = np.bincount(sidx, minlength=n_stars)[sidx] >= 2
    star_mag = np.zeros(n_stars)
    it = 0
    for it in range(1, max_iterations + 1):  # noqa: B007 (the count is returned)
        w = np.where(use, 1.0 / (var + excess[sidx]), 0.0)
        sw = np.bincount(sidx, w, n_stars)
        star_mag = np.bincount(sidx, w * (mag - offset[frame]), n_stars) / np.where(sw > 0, sw, 1.0)
        fw = np.bincount(frame, w, n_frames)
        new = np.bincount(frame, w * (mag - star_mag[sidx]), n_frames) / np.where(fw > 0, fw, 1.0)
        counts = np.bincount(frame, use.astype(float), n_frames)
        new[counts < min_stars] = 0.0
        constrained = counts >= min_stars
        if constrained.any():  # gauge: zero weighted mean offset keeps the catalogue's calibration
            new[constrained] -= np.average(new[constrained], weights=fw[constrained])
        resid = mag - star_mag[sidx] - new[frame]
        # excess variance per star, only where its chi-square says it scatters beyond its errors (3 sigma):
        # a few frames' noise alone would otherwise inflate every star's variance and every offset's error
        nuse = np.bincount(sidx, use.astype(float), n_stars)
        dof = np.maximum(nuse - 1, 1)
        chi2 = np.bincount(sidx, np.where(use, resid**2 / var, 0.0), n_stars)
        ex = np.bincount(sidx, np.where(use, resid**2 - var, 0.0), n_stars) / dof
        excess = np.where(chi2 > dof + 3 * np.sqrt(2 * dof), np.clip(ex, 0.0, None), 0.0)
        sigma = np.sqrt(var + excess[sidx])
        new_use = np.abs(resid) < clip_sigma * np.maximum(sigma, 1e-4)
        converged = np.max(np.abs(new - offset)) < tolerance and np.array_equal(new_use, use)
        offset, use = new, new_use
        if converged:
            break
    w = np.where(use, 1.0 / (var + excess[sidx]), 0.0)
    fw = np.bincount(frame, w, n_frames)
    counts = np.bincount(frame, use.astype(np.int64), n_frames)
    offset_err = np.where((counts >= min_stars) & (fw > 0), 1.0 / np.sqrt(np.where(fw > 0, fw, 1.0)), np.inf)
    offset = np.where(np.isfinite(offset_err), offset, 0.0)
    return EnsembleSolution(offset, offset_err, counts, star_ids, star_mag, np.sqrt(excess), it)
