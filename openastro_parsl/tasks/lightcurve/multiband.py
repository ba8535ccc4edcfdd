"""A multiband periodogram a survey can afford: the shared-phase model from per-band trigonometric sums.

The statistic is VanderPlas & Ivezic (2015)'s multiband power for one sinusoid shared by all bands, each band
with its own mean (N_base = 1, N_band = 0; astropy's ``LombScargleMultiband(nterms_base=1, nterms_band=0)``):
the fraction of the weighted chi-square about the band means that the sinusoid removes. Few parameters, so a
band with a handful of points still helps instead of adding noise (a free sinusoid per band would).

Astropy solves that model by least squares at every frequency in Python (``flexible``: 40-150x a single-band
search on a 5-band, 10-year light curve). Its normal equations need only sums over the points: per band
sum w e^{i w t} and sum w, and over all points sum w e^{2 i w t} and sum w (y - band mean) e^{i w t}, so on a
regular grid they come from B + 2 non-uniform FFTs (finufft, which nifty-ls is built on), the cost of a few
single-band spectra. With B bands that is still several spectra, so the grid is coarse
(``coarse_samples_per_peak``) and the statistic is summed directly, on the fine grid, around the strongest
coarse peaks; the period search then fits its multi-harmonic model at the few best of those.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def fast_method() -> str:
    """``fastnifty`` when nifty-ls is importable (importing it registers the method with astropy), else ``fast``."""
    try:
        import nifty_ls  # noqa: F401
    except ImportError:
        return "fast"
    return "fastnifty"


def fast_power(t, y, dy, freq, method: str) -> np.ndarray:
    """Astropy's single-band floating-mean Lomb-Scargle on a regular grid (one thread: a task has one core)."""
    from astropy.timeseries import LombScargle

    kwds = None
    if method == "fastnifty":
        import nifty_ls  # noqa: F401  (registers the method with astropy)

        kwds = {"nthreads": 1}
    p = LombScargle(t, y, dy).power(freq, method=method, assume_regular_frequency=True, method_kwds=kwds)
    return np.nan_to_num(np.asarray(p, dtype=float))


def _grid_sums(t, strengths, f0: float, df: float, n: int) -> np.ndarray:
    """sum_j strengths[k, j] exp(2 pi i f t_j) for f = f0 + m df, m < n: (K, n), by a type-1 non-uniform FFT
    (finufft) or, without it, directly."""
    try:
        import finufft
    except ImportError:
        return np.concatenate([_direct_sums(t, strengths, f0 + df * np.arange(i, min(i + 2000, n)))
                               for i in range(0, n, 2000)], axis=1)
    x = (2 * np.pi * df * t) % (2 * np.pi)
    c = strengths * np.exp(1j * (2 * np.pi * f0 * t + (n // 2) * x))  # mode k = m - n // 2
    return np.atleast_2d(finufft.nufft1d1(x, np.ascontiguousarray(c, dtype=complex), n_modes=n, eps=1e-8,
                                          isign=1, nthreads=1))


def _direct_sums(t, strengths, freq) -> np.ndarray:
    return _real_times_complex(strengths, np.exp(2j * np.pi * np.outer(t, freq)))


def _real_times_complex(a, z) -> np.ndarray:
    """a @ z for real a, complex z, as two real products (numpy's mixed-type matmul does not use BLAS)."""
    return a @ z.real + 1j * (a @ z.imag)


class SharedPhase:
    """The shared-phase multiband power of one light curve, at any frequencies or on a regular grid."""

    def __init__(self, t, y, dy, bands):
        t, y, dy = (np.asarray(a, float) for a in (t, y, dy))
        self.t = t - t.min()  # the power does not depend on the time origin; the phases stay small
        self.w = dy**-2.0
        ub, bi = np.unique(np.asarray(bands, str), return_inverse=True)
        self.onehot = (bi[None, :] == np.arange(len(ub))[:, None]) * self.w  # B x N: w in each band
        self.wb = self.onehot.sum(axis=1)
        means = (self.onehot @ y) / self.wb
        self.yc = y - means[bi]
        self.yy = float(np.sum(self.w * self.yc**2))
        self.first = np.vstack([self.onehot, self.w * self.yc])  # sums at f: one per band, then the data
        self.double = self.w[None, :]  # sum at 2f

    def power(self, freq) -> np.ndarray:
        freq = np.atleast_1d(np.asarray(freq, float))
        return self._power(_direct_sums(self.t, self.first, freq), _direct_sums(self.t, self.double, 2 * freq)[0])

    def window_power(self, starts, df: float, n: int) -> np.ndarray:
        """(len(starts), n): the power at starts[i] + k df, k < n, the phasors stepped by multiplication."""
        z = np.exp(2j * np.pi * np.outer(self.t, starts))  # N x W
        step = np.exp(2j * np.pi * df * self.t)[:, None]
        out = np.empty((len(starts), n))
        for k in range(n):
            out[:, k] = self._power(_real_times_complex(self.first, z), _real_times_complex(self.double, z * z)[0])
            z = z * step
        return out

    def grid_power(self, f0: float, df: float, n: int) -> np.ndarray:
        return self._power(_grid_sums(self.t, self.first, f0, df, n), _grid_sums(self.t, self.double, 2 * f0,
                                                                                  2 * df, n)[0])

    def _power(self, first, c2) -> np.ndarray:
        """Normal equations of y - band mean = a sin + b cos with the band means projected out."""
        sb, yf = first[:-1], first[-1]
        w = float(self.wb.sum())
        ss = (w - c2.real) / 2 - np.sum(sb.imag**2 / self.wb[:, None], axis=0)
        cc = (w + c2.real) / 2 - np.sum(sb.real**2 / self.wb[:, None], axis=0)
        sc = c2.imag / 2 - np.sum(sb.imag * sb.real / self.wb[:, None], axis=0)
        ys, yc = yf.imag, yf.real
        det = ss * cc - sc**2
        num = ys**2 * cc - 2 * ys * yc * sc + yc**2 * ss
        ok = det > 1e-12 * w**2
        return np.where(ok, num / np.where(ok, det, 1.0), 0.0) / self.yy if self.yy > 0 else np.zeros(len(det))


@dataclass
class MultibandSpectrum:
    """The coarse spectrum (for plots and summaries) and the peaks found again on the fine grid."""

    grid: np.ndarray
    power: np.ndarray
    peak_frequency: np.ndarray  # strongest first
    peak_power: np.ndarray


def local_maxima(power) -> np.ndarray:
    """Indices of the local maxima of a spectrum (its ends count), strongest first."""
    from scipy.signal import find_peaks

    peaks, _ = find_peaks(np.concatenate([[-np.inf], power, [-np.inf]]))
    peaks = peaks - 1
    return peaks[np.argsort(power[peaks], kind="stable")[::-1]]


def multiband_spectrum(t, y, dy, bands, *, fmin: float, fmax: float, df: float, coarse_samples_per_peak: float,
                       samples_per_peak: float, n_peaks: int) -> MultibandSpectrum:
    """Coarse grid by non-uniform FFT, then the exact statistic on the fine grid (step ``df``) within one coarse
    step of the ``n_peaks`` strongest coarse peaks; the fine peaks strongest first, one per window."""
    stat = SharedPhase(t, y, dy, bands)
    step = df * max(1.0, samples_per_peak / coarse_samples_per_peak)
    n = int(np.ceil((fmax - fmin) / step))
    grid = fmin + step * np.arange(n)
    power = stat.grid_power(fmin, step, n)
    top = local_maxima(power)[:n_peaks]
    half = int(np.ceil(step / df))
    starts = np.maximum(grid[top] - half * df, fmin)
    fine = starts[:, None] + np.arange(2 * half + 1)[None, :] * df
    fine_power = stat.window_power(starts, df, 2 * half + 1)
    k = np.argmax(fine_power, axis=1)
    raw_f, raw_p = fine[np.arange(len(top)), k], fine_power[np.arange(len(top)), k]
    _, first = np.unique(np.round(raw_f / df).astype(np.int64), return_index=True)  # windows that met: once
    pf, pp = raw_f[first], raw_p[first]
    order = np.argsort(pp, kind="stable")[::-1]
    return MultibandSpectrum(grid, power, pf[order], pp[order])
