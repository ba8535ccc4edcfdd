"""Brightness of the time-variable targets (periodic variables, the transient).

Kept apart from rendering so the same functions give both the pixels and the truth
light curves a pipeline's output is compared against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PeriodicVariable:
    """m(t) = mean + amplitude * shape(phase); shape has zero mean and unit peak-to-peak.

    shape(phase) = -(sum_k a_k cos(2 pi k phase + p_k) - offset) / norm, so phase 0 (t = epoch)
    is close to maximum light for a mostly-sinusoidal curve.
    """

    name: str
    period: float  # days
    epoch: float  # MJD of phase 0
    mean_r: float
    mean_g: float
    amplitude_r: float  # peak-to-peak, mag
    amplitude_g: float
    harmonics: tuple[tuple[float, float], ...]  # (a_k, p_k) for k = 1..

    def _raw(self, phase):
        phase = np.asarray(phase, dtype=float)
        return sum(a * np.cos(2 * np.pi * (k + 1) * phase + p) for k, (a, p) in enumerate(self.harmonics))

    @property
    def _norm(self):
        grid = self._raw(np.linspace(0.0, 1.0, 8192, endpoint=False))
        return float(grid.max() - grid.min())

    def shape(self, t):
        phase = (np.asarray(t, dtype=float) - self.epoch) / self.period
        return -self._raw(phase) / self._norm

    def mag(self, band: str, t):
        mean = self.mean_r if band == "r" else self.mean_g
        amp = self.amplitude_r if band == "r" else self.amplitude_g
        return mean + amp * self.shape(t)

    def truth(self) -> dict:
        return {
            "name": self.name,
            "period": self.period,
            "epoch": self.epoch,
            "mean_r": self.mean_r,
            "mean_g": self.mean_g,
            "amplitude": self.amplitude_r,
            "amplitude_g": self.amplitude_g,
            "amplitude_definition": "peak-to-peak, mag",
            "harmonics": [{"k": k + 1, "a": a, "phase": p} for k, (a, p) in enumerate(self.harmonics)],
            "shape_norm": self._norm,
            "model": "m(t) = mean + amplitude * -(sum_k a_k cos(2 pi k (t-epoch)/period + phase_k)) / shape_norm",
        }


@dataclass(frozen=True)
class Transient:
    """Appears at `mjd_start` at peak and fades linearly in magnitude; absent before."""

    name: str
    ra: float
    dec: float
    field: str
    mjd_start: float
    peak_r: float
    peak_g: float
    fade_per_day: float  # r band, mag/day
    fade_per_day_g: float

    def mag(self, band: str, t):
        """Magnitude, or +inf (no flux) before `mjd_start`."""
        t = np.asarray(t, dtype=float)
        peak, fade = (self.peak_r, self.fade_per_day) if band == "r" else (self.peak_g, self.fade_per_day_g)
        dt = t - self.mjd_start
        return np.where(dt >= 0.0, peak + fade * np.maximum(dt, 0.0), np.inf)

    def truth(self) -> dict:
        return {
            "name": self.name,
            "ra": self.ra,
            "dec": self.dec,
            "field": self.field,
            "mjd_start": self.mjd_start,
            "peak_r": self.peak_r,
            "peak_g": self.peak_g,
            "fade_per_day": self.fade_per_day,
            "fade_per_day_g": self.fade_per_day_g,
            "model": "absent for t < mjd_start; m(t) = peak + fade_per_day * (t - mjd_start) after",
        }


def make_variables(rng, targets, season_start: float) -> list[PeriodicVariable]:
    """OA-V1: RR Lyrae-like skewed curve; OA-V2: spotted-star-like sinusoid."""
    by = {t.name: t for t in targets}
    v1, v2 = by["OA-V1"], by["OA-V2"]
    p1 = 0.61 + float(rng.uniform(-0.005, 0.005))
    p2 = 3.70 + float(rng.uniform(-0.03, 0.03))
    return [
        PeriodicVariable(
            "OA-V1", p1, season_start + float(rng.uniform(0, p1)), v1.r, v1.g, 0.30, 0.39,
            ((1.0, 0.0), (0.38, 0.9), (0.14, 1.9)),
        ),
        PeriodicVariable(
            "OA-V2", p2, season_start + float(rng.uniform(0, p2)), v2.r, v2.g, 0.15, 0.17,
            ((1.0, 0.0),),
        ),
    ]


def make_transient(rng, targets, season_start: float, season_nights: float) -> Transient:
    t = next(t for t in targets if t.kind == "transient")
    start = season_start + 0.48 * season_nights + float(rng.uniform(-1.5, 1.5))
    return Transient(t.name, t.ra, t.dec, t.field, round(start, 5), t.r, t.g, 0.05, 0.07)
