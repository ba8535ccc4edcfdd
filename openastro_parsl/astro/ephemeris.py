"""Linear ephemerides: transit (or eclipse, or maximum) times t = t0 + P * epoch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LinearEphemeris", "fit_linear_ephemeris"]


@dataclass(frozen=True)
class LinearEphemeris:
    """A weighted least-squares linear ephemeris and what it rests on."""

    t0: float          # time at epoch 0
    period: float
    cov: np.ndarray    # 2 x 2 covariance of (t0, period), from the quoted errors (not rescaled by chi2)
    chi2: float
    n: int             # times fitted

    @property
    def dof(self) -> int:
        """Degrees of freedom, at least 1 (two times fit a line exactly)."""
        return max(self.n - 2, 1)

    @property
    def chi2_red(self) -> float:
        return self.chi2 / self.dof

    @property
    def t0_err(self) -> float:
        return float(np.sqrt(self.cov[0, 0]))

    @property
    def period_err(self) -> float:
        return float(np.sqrt(self.cov[1, 1]))

    def predict(self, epoch) -> np.ndarray:
        """Predicted times at ``epoch`` (array-like)."""
        return self.t0 + self.period * np.asarray(epoch, dtype=float)


def fit_linear_ephemeris(epochs, times, errors) -> LinearEphemeris:
    """Weighted least squares ``t = t0 + P * epoch`` (weights 1 / error^2) through ``numpy.linalg.lstsq``.

    Epochs are best counted from a transit near the middle of the data (t0 and P are then least correlated);
    times and errors in any one unit (days, usually BJD_TDB).
    """
    epochs, times, errors = (np.asarray(a, dtype=float) for a in (epochs, times, errors))
    if len(times) < 2:
        raise ValueError("a linear ephemeris needs at least two times")
    A = np.vstack([np.ones_like(epochs), epochs]).T / errors[:, None]
    b = times / errors
    sol, *_ = np.linalg.lstsq(A, b, rcond=None)
    cov = np.linalg.inv(A.T @ A)
    r = b - A @ sol
    return LinearEphemeris(float(sol[0]), float(sol[1]), cov, float(r @ r), int(len(times)))
