"""Co-addition kernel: SNR^2-weighted, sigma-clipped mean of frames on one grid, in memory-capped tiles.

Frames are *array providers*: anything with ``data``, ``variance`` and ``mask`` (or None) attributes that
slice like 2-D numpy arrays — an in-memory ``Image``, ``np.memmap`` planes, :class:`NpyFrame` (``.npy``
planes) or :func:`fits_frame` (a datastore Image FITS file), which read only the slice asked for. The
kernel reads one tile (a band of rows, or a block when one row of every frame is already too much) of every
frame at a time, so its working memory is bounded by ``memory_cap_mb`` whatever the number of frames. Every per-pixel operation is independent of the tiling, so
a tiled result equals the whole-image result to the last bit.

Algorithm per pixel, over the frames i whose pixel is valid (finite, variance > 0, no excluded mask bit):
  1. reject iteratively (monotonically) values with |x_i - c| > k sqrt(v_i + (A c)^2), c = median of the
     survivors (only where at least ``min_clip_frames`` remain). On the sky (c ~ 0) the noise term alone
     clips cosmic rays, trails and hot pixels. On sources, frames of different seeing differ for real (a
     star's peak goes as 1/FWHM^2, and a broad PSF's wings exceed a sharp one's several-fold), and clipping
     those differences drops flux; the amplitude term (SWarp's CLIP_AMPFRAC) allows for them. SWarp's 0.3
     suits one camera; on the demo's r-band stack of three cameras (seeing 1.2-4 arcsec) bright isolated
     stars came out 0.09 mag faint with A = 0.3, 0.012 with A = 1 and 0.003 with A = 2 (no clipping:
     0.003), hence the task's default of 2;
  2. mean = sum w_i x_i / sum w_i over survivors, variance = sum w_i^2 v_i / (sum w_i)^2 (exact propagation;
     = 1 / sum w_i for inverse-variance weights), coverage = number of survivors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...datastore.image import MASK_BITS, Image

__all__ = ["BYTES_PER_SAMPLE", "CoaddResult", "FitsPlane", "NpyArray", "NpyFrame", "coadd", "fits_frame",
           "frame_weights", "plan_tiles", "save_npy_frame", "masked_median"]

# Working bytes per (frame, pixel) sample of a tile: float64 value, variance and scratch planes (24), the
# validity flags (1), one float64 temporary and a few boolean ones during clipping and the weighted sums
# (~11), with margin: the traced peak is ~33 bytes per sample (benchmarks/coadd.py), and
# tests/tasks/test_coadd.py checks it stays under the cap.
BYTES_PER_SAMPLE = 48
OUTPUT_BYTES_PER_PIXEL = 12  # float32 image + float32 variance + int32 coverage
MAX_WEIGHT_SAMPLES = 1 << 22  # pixels per frame read to estimate its sky variance
WEIGHTINGS = ("frame", "pixel", "point_source")
DEFAULT_BAD = MASK_BITS["BAD"] | MASK_BITS["SAT"] | MASK_BITS["CR"] | MASK_BITS["NO_DATA"]


class NpyArray:
    """A 2-D ``.npy`` file read lazily: each slice maps the file, copies the slice and unmaps it again.

    Unlike a long-lived ``np.memmap`` this keeps no pages of the file mapped between reads, so the process's
    resident memory reflects only what is being worked on.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        mm = np.load(self.path, mmap_mode="r")
        self.shape, self.dtype = mm.shape, mm.dtype
        del mm

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key) -> np.ndarray:
        mm = np.load(self.path, mmap_mode="r")
        try:
            return np.array(mm[key])
        finally:
            del mm


@dataclass
class NpyFrame:
    """A frame whose planes live in ``.npy`` files (see :func:`save_npy_frame`)."""

    data: Any
    variance: Any
    mask: Any = None
    header: dict = field(default_factory=dict)

    @classmethod
    def open(cls, stem: str | Path, header: dict | None = None) -> "NpyFrame":
        stem = Path(stem)
        mask = stem.with_name(stem.name + ".mask.npy")
        return cls(NpyArray(stem.with_name(stem.name + ".data.npy")), NpyArray(stem.with_name(stem.name + ".var.npy")),
                   NpyArray(mask) if mask.exists() else None, header or {})


class FitsPlane:
    """One image HDU of a FITS file read lazily: each slice opens the file and reads only that section."""

    def __init__(self, path: str | Path, hdu: int | str):
        from astropy.io import fits

        self.path, self.hdu = Path(path), hdu
        with fits.open(self.path, memmap=False, lazy_load_hdus=True) as hdul:
            h = hdul[hdu].header
            self.shape = (int(h["NAXIS2"]), int(h["NAXIS1"]))

    @property
    def ndim(self) -> int:
        return 2

    def __getitem__(self, key) -> np.ndarray:
        from astropy.io import fits

        with fits.open(self.path, memmap=False, lazy_load_hdus=True) as hdul:
            return np.array(hdul[self.hdu].section[key])


def fits_frame(path: str | Path) -> NpyFrame:
    """A lazy frame over an Image FITS file as the datastore writes it (pixels, MASK and VARIANCE HDUs)."""
    from astropy.io import fits

    with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
        names = [h.name for h in hdul]
        header = dict(hdul[0].header)
    if "VARIANCE" not in names:
        raise ValueError(f"{path}: no VARIANCE extension")
    return NpyFrame(FitsPlane(path, 0), FitsPlane(path, "VARIANCE"),
                    FitsPlane(path, "MASK") if "MASK" in names else None, header)


def save_npy_frame(image: Image, stem: str | Path) -> NpyFrame:
    """Write an Image's planes as ``stem.data.npy``, ``stem.var.npy``, ``stem.mask.npy``; return the lazy frame."""
    stem = Path(stem)
    np.save(stem.with_name(stem.name + ".data.npy"), np.asarray(image.data, np.float32))
    np.save(stem.with_name(stem.name + ".var.npy"), np.asarray(image.variance, np.float32))
    if image.mask is not None:
        np.save(stem.with_name(stem.name + ".mask.npy"), np.asarray(image.mask, np.int32))
    return NpyFrame.open(stem, dict(image.header) if image.header is not None else {})


@dataclass
class CoaddResult:
    image: np.ndarray       # float32, NaN where nothing contributed
    variance: np.ndarray    # float32, uncertainty^2
    coverage: np.ndarray    # int32, frames contributing per pixel (after clipping)
    weights: np.ndarray     # per-frame weights used (NaN for weighting="pixel")
    n_clipped: int          # samples rejected by sigma clipping
    tile_shape: tuple[int, int]
    n_tiles: int


def _valid(x: np.ndarray, v: np.ndarray, m: np.ndarray | None, bad_bits: int) -> np.ndarray:
    ok = np.isfinite(x) & np.isfinite(v) & (v > 0)
    if m is not None:
        ok &= (np.asarray(m) & bad_bits) == 0
    return ok


def frame_weights(frames: Sequence[Any], weighting: str = "frame", *, fwhm: Sequence[float] | None = None,
                  bad_bits: int = DEFAULT_BAD) -> np.ndarray:
    """Per-frame SNR^2 weights (NaN for ``weighting="pixel"``, whose weights are 1/variance per pixel).

    All frames are on one flux scale after normalisation, so a source of flux S has SNR_i = S / sigma_i in
    frame i and SNR_i^2 is proportional to 1/sigma_i^2: ``frame`` uses the frame's median variance (the sky
    noise). Per-frame rather than per-pixel, because the variance plane holds each star's own Poisson noise,
    and weighting by it would favour the frames where a star happened to come out faint. ``point_source``
    divides by FWHM^2 as well (SNR^2 of a PSF-fitted star ~ S^2 / (sigma^2 FWHM^2)), favouring sharp frames.
    The median is taken over a fixed subsample of rows (at most MAX_WEIGHT_SAMPLES pixels), independent of
    the memory cap, so tiled and whole-image co-adds use the same weights.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, not {weighting!r}")
    n = len(frames)
    if weighting == "pixel":
        return np.full(n, np.nan)
    out = np.empty(n)
    for i, f in enumerate(frames):
        ny, nx = f.data.shape
        step = max(1, math.ceil(ny * nx / MAX_WEIGHT_SAMPLES))
        v = np.asarray(f.variance[::step], np.float64)
        ok = _valid(np.asarray(f.data[::step], np.float64), v, None if f.mask is None else f.mask[::step], bad_bits)
        if not ok.any():
            out[i] = 0.0
            continue
        out[i] = 1.0 / float(np.median(v[ok]))
    if weighting == "point_source":
        if fwhm is None or len(fwhm) != n:
            raise ValueError("weighting='point_source' needs one FWHM per frame")
        f2 = np.asarray(fwhm, np.float64) ** 2
        if not np.all(np.isfinite(f2) & (f2 > 0)):
            raise ValueError(f"weighting='point_source' needs positive FWHMs, got {list(fwhm)}")
        out = out / f2
    return out


def plan_tiles(shape: tuple[int, int], n_frames: int, memory_cap_mb: float) -> tuple[int, int]:
    """Largest tile (rows, cols) whose working set, plus the full-size outputs, fits in ``memory_cap_mb``.

    Whole rows when possible (contiguous reads from files), else blocks of a single row band.
    """
    ny, nx = shape
    budget = memory_cap_mb * 2**20 - ny * nx * OUTPUT_BYTES_PER_PIXEL
    per_pixel = max(n_frames, 1) * BYTES_PER_SAMPLE
    if budget < per_pixel * min(nx, 64):
        raise MemoryError(f"memory_cap_mb={memory_cap_mb:g} is too small for a {ny}x{nx} co-add of {n_frames} "
                          f"frames: outputs need {ny * nx * OUTPUT_BYTES_PER_PIXEL / 2**20:.1f} MB and a "
                          f"64-pixel tile {per_pixel * 64 / 2**20:.1f} MB")
    if per_pixel * nx <= budget:
        return int(min(ny, budget // (per_pixel * nx))), nx
    return 1, int(budget // per_pixel)


def masked_median(x: np.ndarray, keep: np.ndarray, scratch: np.ndarray | None = None) -> np.ndarray:
    """Median along axis 0 of ``x`` over entries where ``keep``; NaN where none are kept."""
    s = np.empty_like(x) if scratch is None else scratch
    s.fill(np.inf)
    np.copyto(s, x, where=keep)
    s.sort(axis=0)
    n = keep.sum(axis=0)
    lo = np.maximum((n - 1) // 2, 0)[None]
    hi = np.maximum(n // 2, 0)[None]
    med = 0.5 * (np.take_along_axis(s, lo, 0)[0] + np.take_along_axis(s, hi, 0)[0])
    med[n == 0] = np.nan
    return med


def _clip(x, v, keep, eligible, k, amp, scratch):
    """One rejection pass on (N, P) arrays; updates ``keep`` in place and returns the newly rejected samples."""
    c = masked_median(x, keep, scratch)
    r = np.subtract(x, c[None], out=scratch)
    np.multiply(r, r, out=r)
    r /= k * k
    r -= v
    reject = r > ((amp * c) ** 2)[None]  # (x - c)^2 > k^2 (v + (A c)^2)
    reject &= keep
    reject &= eligible[None]
    keep &= ~reject
    return reject


def _clip_tile(x, v, keep, k, amp, iters, min_frames, scratch) -> int:
    """Iterative clipping of a tile in (N, P) layout; later passes visit only pixels that changed, in blocks
    of at most a quarter of the tile so the gathered copies stay within the tile's memory budget."""
    if iters <= 0 or x.shape[0] < min_frames:
        return 0
    eligible = keep.sum(axis=0) >= min_frames
    rejected = _clip(x, v, keep, eligible, k, amp, scratch)
    total = int(rejected.sum())
    active = np.flatnonzero(rejected.any(axis=0))
    del rejected
    block = max(1, x.shape[1] // 4)
    for _ in range(iters - 1):
        still = []
        for b in range(0, active.size, block):
            idx = active[b:b + block]
            xa, va, ka = x[:, idx], v[:, idx], keep[:, idx]
            rej = _clip(xa, va, ka, ka.sum(axis=0) >= min_frames, k, amp, None)
            keep[:, idx] = ka
            total += int(rej.sum())
            still.append(idx[rej.any(axis=0)])
        active = np.concatenate(still) if still else active[:0]
        if active.size == 0:
            break
    return total


def coadd(frames: Sequence[Any], *, weighting: str = "frame", weights: Sequence[float] | None = None,
          fwhm: Sequence[float] | None = None, clip_sigma: float = 3.0, clip_ampfrac: float = 2.0,
          clip_iters: int = 5, min_clip_frames: int = 3, bad_bits: int = DEFAULT_BAD,
          memory_cap_mb: float = 1024.0, tile_shape: tuple[int, int] | None = None) -> CoaddResult:
    """Co-add ``frames`` (array providers on one grid); see the module docstring for the algorithm.

    ``weights`` overrides the per-frame weights; ``tile_shape`` overrides the tiling derived from the cap
    (tests use it to compare tilings). ``clip_sigma <= 0`` or ``clip_iters = 0`` switches clipping off.
    """
    if not frames:
        raise ValueError("no frames to co-add")
    shape = tuple(frames[0].data.shape)
    for i, f in enumerate(frames):
        if tuple(f.data.shape) != shape or tuple(f.variance.shape) != shape:
            raise ValueError(f"frame {i}: shape {tuple(f.data.shape)} / variance {tuple(f.variance.shape)} differs "
                             f"from the grid {shape}")
    n = len(frames)
    if weights is not None:
        w_frame = np.asarray(weights, np.float64)
        if w_frame.shape != (n,):
            raise ValueError(f"weights: need {n} values, got {w_frame.shape}")
        per_pixel = False
    else:
        w_frame = frame_weights(frames, weighting, fwhm=fwhm, bad_bits=bad_bits)
        per_pixel = weighting == "pixel"
    th, tw = tile_shape or plan_tiles(shape, n, memory_cap_mb)
    ny, nx = shape
    image = np.full(shape, np.nan, np.float32)
    variance = np.full(shape, np.nan, np.float32)
    coverage = np.zeros(shape, np.int32)
    size = n * th * tw
    buf_x, buf_v, buf_s = np.empty(size), np.empty(size), np.empty(size)
    buf_ok = np.empty(size, bool)
    clipping = clip_sigma > 0 and clip_iters > 0
    n_clipped, n_tiles = 0, 0
    for y0 in range(0, ny, th):
        y1 = min(ny, y0 + th)
        for x0 in range(0, nx, tw):
            x1 = min(nx, x0 + tw)
            h, w = y1 - y0, x1 - x0
            x = buf_x[: n * h * w].reshape(n, h, w)
            v = buf_v[: n * h * w].reshape(n, h, w)
            ok = buf_ok[: n * h * w].reshape(n, h, w)
            scratch = buf_s[: n * h * w].reshape(n, h * w)
            for i, f in enumerate(frames):
                x[i] = f.data[y0:y1, x0:x1]
                v[i] = f.variance[y0:y1, x0:x1]
                ok[i] = _valid(x[i], v[i], None if f.mask is None else f.mask[y0:y1, x0:x1], bad_bits)
            np.copyto(x, 0.0, where=~ok)
            np.copyto(v, 1.0, where=~ok)
            X, V, K = x.reshape(n, -1), v.reshape(n, -1), ok.reshape(n, -1)
            if clipping:
                n_clipped += _clip_tile(X, V, K, clip_sigma, clip_ampfrac, clip_iters, min_clip_frames, scratch)
            # weights of the survivors, in the scratch plane
            wk = scratch
            if per_pixel:
                np.divide(1.0, V, out=wk)
                wk *= K
            else:
                np.multiply(K, w_frame[:, None], out=wk)
            wsum = wk.sum(axis=0)
            mean = (wk * X).sum(axis=0)
            wk *= wk
            var = (wk * V).sum(axis=0)
            cov = K.sum(axis=0)
            good = (cov > 0) & (wsum > 0)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(good, mean / wsum, np.nan)
                var = np.where(good, var / (wsum * wsum), np.nan)
            image[y0:y1, x0:x1] = mean.reshape(h, w)
            variance[y0:y1, x0:x1] = var.reshape(h, w)
            coverage[y0:y1, x0:x1] = cov.reshape(h, w)
            n_tiles += 1
    return CoaddResult(image, variance, coverage, w_frame, n_clipped, (th, tw), n_tiles)
