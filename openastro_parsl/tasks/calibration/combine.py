"""Sigma-clipped combination of calibration frames in bounded memory, on the co-add kernel.

A master is the per-pixel clipped mean of many frames after each is corrected (bias subtracted, scaled to a
rate or a level). The co-add kernel (``tasks.image.coadd_kernel.coadd``) already does a clipped mean of any
*array providers* one tile at a time, so here every frame becomes a provider whose planes are computed from
the (memory-mapped) raw slice the kernel asks for: the corrected frames never exist whole, and the working
memory is bounded by ``memory_cap_mb`` whatever the number of frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..image.coadd_kernel import CoaddResult, coadd

__all__ = ["CorrectedFrame", "combine", "robust_level", "robust_sigma"]

# Rows sampled for a frame's level: every SAMPLE_STEP-th row, so the level costs a fraction of one frame.
SAMPLE_STEP = 4


class _Plane:
    """A 2-D plane computed on demand from a slice key (what the co-add kernel reads)."""

    def __init__(self, shape: tuple[int, int], compute: Callable[[Any], np.ndarray]):
        self.shape = shape
        self.ndim = 2
        self._compute = compute

    def __getitem__(self, key) -> np.ndarray:
        return self._compute(key)


@dataclass
class CorrectedFrame:
    """One calibration frame as the kernel sees it: ``(raw - offset * offset_scale) / divisor`` and its variance.

    ``raw`` is any 2-D array (memory-mapped or not) in ADU; ``offset`` a plane subtracted with weight
    ``offset_scale`` (bias, or bias + dark x exptime as two terms); the variance is the read noise plus the
    signal's own Poisson noise through ``gain`` (e-/ADU), scaled alike.
    """

    raw: Any
    offsets: Sequence[tuple[Any, float]]
    divisor: float
    read_noise_adu: float
    gain: float

    def _signal(self, key) -> np.ndarray:
        x = np.asarray(self.raw[key], dtype=np.float64)
        for plane, scale in self.offsets:
            if scale:
                x = x - scale * np.asarray(plane[key], dtype=np.float64)
        return x

    @property
    def data(self) -> _Plane:
        return _Plane(tuple(self.raw.shape), lambda key: self._signal(key) / self.divisor)

    @property
    def variance(self) -> _Plane:
        def var(key):
            s = np.clip(self._signal(key), 0.0, None)
            return (self.read_noise_adu ** 2 + s / self.gain) / self.divisor ** 2
        return _Plane(tuple(self.raw.shape), var)

    mask = None


def robust_level(frame: CorrectedFrame) -> float:
    """Median of the corrected signal over every SAMPLE_STEP-th row (a flat's illumination level)."""
    sample = frame._signal((slice(None, None, SAMPLE_STEP), slice(None)))
    good = sample[np.isfinite(sample)]
    return float(np.median(good)) if good.size else float("nan")


def robust_sigma(values: np.ndarray) -> float:
    """1.4826 x MAD of the finite values: a noise scale that hot pixels and stars do not inflate."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return float("nan")
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def combine(frames: Sequence[CorrectedFrame], *, clip_sigma: float = 3.0, clip_iters: int = 5,
            memory_cap_mb: float = 512.0) -> CoaddResult:
    """Equal-weight, sigma-clipped mean of ``frames`` (clipping on the noise alone: calibration frames of one
    kind differ only by noise, cosmic rays and hot-pixel flicker, so the co-add's amplitude term is off)."""
    if not frames:
        raise ValueError("no frames to combine")
    return coadd(list(frames), weights=np.ones(len(frames)), clip_sigma=clip_sigma, clip_ampfrac=0.0,
                 clip_iters=clip_iters, min_clip_frames=3, memory_cap_mb=memory_cap_mb)
