"""The multi-harmonic light-curve model a period search refines its candidates with, fitted at many trial
frequencies at once (one batched linear solve per step instead of a Python loop of least squares: the
refinement scans ~80 frequencies per candidate, so this is where a multiband search spent its time).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class HarmonicModel:
    """y = offset[group] + scale[band] * sum_k (a_k sin 2pi k f t + b_k cos 2pi k f t).

    One light-curve shape shared by all bands, its amplitude scaled per band (a pulsating star's amplitude
    depends on colour), and one offset per group (instrument x band: each calibration's own zero point).
    """

    frequency: float
    nterms: int
    groups: list[str]
    offsets: np.ndarray
    bands: list[str]
    scales: np.ndarray
    coef: np.ndarray
    chi2: float
    n_params: int

    def shape(self, t) -> np.ndarray:
        return _harmonics(np.asarray(t, float), np.array([self.frequency]), self.nterms)[0] @ self.coef

    def __call__(self, t, groups, bands) -> np.ndarray:
        o = dict(zip(self.groups, self.offsets, strict=True))
        sc = dict(zip(self.bands, self.scales, strict=True))
        # a group with every point clipped has no offset: NaN (its points stay clipped)
        return (np.array([o.get(g, np.nan) for g in groups])
                + np.array([sc.get(b, np.nan) for b in bands]) * self.shape(t))


def _harmonics(t, freqs, nterms) -> np.ndarray:
    """(F, N, 2 nterms): sin, cos of k 2 pi f t for each trial frequency f (higher k by angle addition)."""
    w = 2 * np.pi * np.asarray(freqs, float)[:, None] * t[None, :]
    s1, c1 = np.sin(w), np.cos(w)
    cols = [s1, c1]
    for _ in range(1, nterms):
        s, c = cols[-2], cols[-1]
        cols += [s * c1 + c * s1, c * c1 - s * s1]
    return np.stack(cols, axis=-1)


def _solve(X, z, w2, gw2, wg) -> np.ndarray:
    """Weighted least squares of z on X plus one free offset per group, for each frequency (X: F x N x p,
    z: N or F x N), the offsets projected out of the normal equations:
    A = X'WX - Sx' Sx / W_g, b = X'Wz - Sx' Sz / W_g with Sx, Sz the groups' weighted sums. A singular system
    (a column without data) falls back to lstsq."""
    Xt = X.transpose(0, 2, 1)
    Sx = gw2.T @ X  # F x G x p
    Sz = z @ gw2  # (F x) G
    A = Xt @ (X * w2[:, None]) - Sx.transpose(0, 2, 1) @ (Sx / wg[:, None])
    b = (Xt @ (z * w2)[..., None])[..., 0] - (Sx.transpose(0, 2, 1) @ (Sz / wg)[..., None])[..., 0]
    try:
        return np.linalg.solve(A, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return np.stack([np.linalg.lstsq(A[i], b[i], rcond=None)[0] for i in range(len(A))])


def _initial_guess(H, y, bi, n_bands, ref, w2):
    """Scales and shape to start from: each band's own harmonic coefficients (a linear fit per band, one
    offset per band), then the best rank-one approximation of that bands x coefficients matrix (its first
    singular vectors), the reference band's scale set to 1. A band with too few points for its own fit
    starts at scale 0 (the first Gauss-Newton step gives it one)."""
    F, p = H.shape[0], H.shape[-1]
    C = np.zeros((F, n_bands, p))
    for b in range(n_bands):
        m = bi == b
        if m.sum() > 2 * (p + 1):
            C[:, b] = _solve(H[:, m], y[m], w2[m], w2[m][:, None], np.array([w2[m].sum()]))
    u, sv, vt = np.linalg.svd(C)
    lead = u[:, :, 0]
    ok = np.abs(lead[:, ref]) > 1e-12
    scales = np.ones((F, n_bands))
    scales[ok] = lead[ok] / lead[ok, ref][:, None]
    coef = (sv[:, 0] * np.where(ok, lead[:, ref], 1.0))[:, None] * vt[:, 0, :]
    return scales, coef


def _fit_batch(t, y, dy, freqs, gi, n_groups, bi, n_bands, nterms, n_iter, fixed_scales=None, tol=1e-6):
    """Weighted least squares of the HarmonicModel at each frequency, offsets projected out; returns offsets
    (F x G), scales (F x B), coef (F x 2K), chi2 (F).

    With ``fixed_scales`` (or one band) the model is linear: one solve. Otherwise it is bilinear (scale x
    shape): from ``_initial_guess``, Gauss-Newton steps (shape and scale increments solved together, the
    reference band, the one with most points, keeping scale 1) until no scale moves by ``tol``, at most
    ``n_iter`` steps, then the shape solved again for the final scales; the start is kept where it fits better.
    (Alternating between shape and scales from scales of 1 converges linearly: four rounds left the
    chi-square well above its minimum.)"""
    F, N = len(freqs), len(t)
    w2 = dy**-2.0
    gw2 = np.zeros((N, n_groups))
    gw2[np.arange(N), gi] = w2
    wg = gw2.sum(axis=0)
    H = _harmonics(t, freqs, nterms)
    ref = int(np.argmax(np.bincount(bi, minlength=n_bands)))
    others = [b for b in range(n_bands) if b != ref]

    def linear(scales):  # offsets, coef, chi2 with the scales given
        coef = _solve(H * scales[:, bi, None], y, w2, gw2, wg)
        rest = y - scales[:, bi] * (H @ coef[..., None])[..., 0]
        offsets = (rest @ gw2) / wg
        r = rest - offsets[:, gi]
        return offsets, coef, (r * r) @ w2

    if fixed_scales is not None or n_bands == 1:
        scales = np.tile(np.asarray(fixed_scales if fixed_scales is not None else [1.0], float), (F, 1))
        offsets, coef, chi2 = linear(scales)
        return offsets, scales, coef, chi2
    start, coef = _initial_guess(H, y, bi, n_bands, ref, w2)
    scales = start.copy()
    p = H.shape[-1]
    for _ in range(n_iter):
        h = (H @ coef[..., None])[..., 0]
        S = np.stack([np.where(bi == b, h, 0.0) for b in others], axis=-1)
        sol = _solve(np.concatenate([H * scales[:, bi, None], S], axis=-1), y, w2, gw2, wg)
        coef, step = sol[:, :p], sol[:, p:]
        scales[:, others] += step
        if float(np.max(np.abs(step))) < tol:
            break
    offsets, coef, chi2 = linear(scales)
    o0, c0, x0 = linear(start)  # Gauss-Newton may wander on a bilinear surface: never worse than the start
    worse = x0 < chi2
    if worse.any():
        offsets[worse], coef[worse], chi2[worse], scales[worse] = o0[worse], c0[worse], x0[worse], start[worse]
    return offsets, scales, coef, chi2


class HarmonicFitter:
    """Fits of the HarmonicModel to one light curve (its group and band layout worked out once)."""

    def __init__(self, t, y, dy, groups, bands, n_iter: int = 10):
        self.t, self.y, self.dy = (np.asarray(a, float) for a in (t, y, dy))
        self.ug, self.gi = np.unique(np.asarray(groups, str), return_inverse=True)
        self.ub, self.bi = np.unique(np.asarray(bands, str), return_inverse=True)
        self.n_iter = n_iter

    def n_params(self, nterms: int) -> int:
        return len(self.ug) + 2 * nterms + len(self.ub) - 1

    def chi2(self, freqs, nterms: int, scales=None, chunk: int = 4_000_000) -> np.ndarray:
        """Chi-square of the best model at each frequency, or of the best with the band ``scales`` held fixed
        (a linear fit: a scan across one peak, where the amplitude ratios do not change). In chunks that keep
        the design matrices small."""
        freqs = np.atleast_1d(np.asarray(freqs, float))
        per = max(1, chunk // (len(self.t) * (len(self.ug) + 2 * nterms + len(self.ub))))
        return np.concatenate([self._fit(freqs[i:i + per], nterms, scales)[3] for i in range(0, len(freqs), per)])

    def model(self, f: float, nterms: int) -> HarmonicModel:
        offsets, scales, coef, chi2 = self._fit(np.array([f], float), nterms)
        return HarmonicModel(float(f), nterms, list(self.ug), offsets[0], list(self.ub), scales[0].copy(),
                             coef[0], float(chi2[0]), self.n_params(nterms))

    def _fit(self, freqs, nterms, scales=None):
        return _fit_batch(self.t, self.y, self.dy, freqs, self.gi, len(self.ug), self.bi, len(self.ub), nterms,
                          self.n_iter, scales)


def harmonic_fit(t, y, dy, f, groups, bands, nterms, n_iter=10) -> HarmonicModel:
    """The HarmonicModel at frequency f (see HarmonicFitter)."""
    return HarmonicFitter(t, y, dy, groups, bands, n_iter).model(f, nterms)
