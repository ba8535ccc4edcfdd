"""Stripe-82-like multiband RR Lyrae light curves with known periods, for judging a period search.

Why this sampling: a ground-based survey sees a field once a night near the same sidereal time, in a few
months' season a year, so the window function has strong peaks at 1 sidereal day^-1 (and 1 yr^-1): the true
period has aliases at f +- k * 1.0027 /d of almost equal power. That is what a period search must resolve, and
what a uniformly random sampling would hide.

Each star: an ab-type (asymmetric sawtooth, 0.45-0.8 d) or c-type (near-sinusoid, 0.25-0.42 d) RR Lyrae,
amplitudes that fall from u/g to z, a light-curve shape that smooths slightly towards the red, ugriz taken a
few minutes apart at each epoch (as in an SDSS drift scan), 60-300 epochs over ~10 seasons, some bands missing
at some epochs, errors from each band's single-epoch depth (g = 17-21), a nightly calibration error the
quoted errors leave out, and a few outliers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SIDEREAL_DAY = 0.99726957  # days
BANDS = ("u", "g", "r", "i", "z")
# amplitude relative to g (peak-to-peak), single-epoch 5-sigma depth, colour relative to g, order in the scan
_AMP_RATIO = {"u": 1.2, "g": 1.0, "r": 0.76, "i": 0.62, "z": 0.56}
_DEPTH = {"u": 22.0, "g": 22.2, "r": 22.2, "i": 21.3, "z": 20.5}
_COLOUR = {"u": 1.15, "g": 0.0, "r": -0.2, "i": -0.25, "z": -0.25}
_SCAN_OFFSET = {"r": 0.0, "i": 72.0, "u": 144.0, "z": 216.0, "g": 288.0}  # seconds after r


@dataclass
class SyntheticStar:
    """One star's light curve (arrays over all bands) and the truth it was made from."""

    t: np.ndarray
    mag: np.ndarray
    mag_err: np.ndarray
    band: np.ndarray
    truth: dict = field(default_factory=dict)

    def per_band(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        return {str(b): (self.t[self.band == b], self.mag[self.band == b], self.mag_err[self.band == b])
                for b in np.unique(self.band)}

    def tables(self, name: str = "RRL"):
        """Light curves as ``makeLightcurve`` writes them (one Table per band), for PeriodSearchTask."""
        from astropy.table import Table

        return [Table({"time": t, "mag": m, "mag_err": e, "outlier": np.zeros(len(t), bool)},
                      meta={"band": b, "target": name}) for b, (t, m, e) in self.per_band().items()]


def _shape(rise: float, kmax: float, phases: np.ndarray) -> np.ndarray:
    """Unit peak-to-peak sawtooth in magnitudes (0 at mean light): brightens over ``rise`` of the cycle, fades
    over the rest, harmonics tapered above ``kmax`` so the curve is smooth like a real one."""
    grid = np.linspace(0.0, 1.0, 1024, endpoint=False)
    saw = np.where(grid < rise, 1.0 - grid / rise, (grid - rise) / (1.0 - rise))  # 1 = faint, 0 = bright
    c = np.fft.rfft(saw)[: int(4 * kmax) + 1]
    k = np.arange(len(c))
    c *= np.exp(-0.5 * (k / kmax) ** 2)
    c[0] = 0.0
    ref = np.fft.irfft(c, len(grid))  # the tapered curve on the grid, for its peak-to-peak
    w = 2 * np.pi * np.outer(phases % 1.0, k[1:])
    vals = 2.0 / len(grid) * (np.cos(w) @ c[1:].real - np.sin(w) @ c[1:].imag)
    return vals / float(np.ptp(ref))


def _cadence(rng, years: int, n_epochs: int, t0: float) -> np.ndarray:
    """Epoch times: nights in ~100-day autumn seasons, each within 2.5 h of the field's transit."""
    season = np.arange(100)
    nights = np.concatenate([365.25 * y + season for y in range(years)])
    weight = np.repeat(rng.uniform(0.3, 1.0, years), len(season))  # some seasons better covered than others
    pick = np.sort(rng.choice(nights.size, size=min(n_epochs, nights.size), replace=False, p=weight / weight.sum()))
    n = np.round(nights[pick] / SIDEREAL_DAY)  # sidereal days: the field transits at the same sidereal time
    return t0 + n * SIDEREAL_DAY + rng.uniform(-2.5, 2.5, n.size) / 24.0


def make_star(rng, *, years: int = 10, min_epochs: int = 60, max_epochs: int = 300, bands=BANDS,
              missing: float = 0.1, outliers: float = 0.005, calibration: float = 0.02,
              t0: float = 51075.0) -> SyntheticStar:
    """One RR Lyrae (ab with probability 0.75, else c) observed Stripe-82-like; see the module docstring."""
    ab = rng.uniform() < 0.75
    if ab:
        period, amp_g, rise, kmax = rng.uniform(0.45, 0.8), rng.uniform(0.5, 1.2), rng.uniform(0.1, 0.2), 6.0
    else:
        period, amp_g, rise, kmax = rng.uniform(0.25, 0.42), rng.uniform(0.3, 0.6), rng.uniform(0.35, 0.5), 2.0
    g_mean = rng.uniform(17.0, 21.0)
    epoch = t0 + rng.uniform(0, period)
    times = _cadence(rng, years, int(rng.integers(min_epochs, max_epochs + 1)), t0)
    zero_point = rng.normal(0.0, calibration, times.size)  # each night's calibration error, the same in all bands
    ts, ms, es, bs = [], [], [], []
    amps, means = {}, {}
    for b in bands:
        amp = amp_g * _AMP_RATIO[b] * rng.uniform(0.95, 1.05)
        mean = g_mean + _COLOUR[b]
        seen = rng.uniform(size=times.size) >= missing
        t = times[seen] + _SCAN_OFFSET[b] / 86400.0
        phase = (t - epoch) / period
        kb = kmax * (1.0 - 0.05 * "ugriz".index(b))  # redder: a little smoother
        true = mean + amp * _shape(rise, kb, phase)
        err = np.sqrt(0.01**2 + (0.2 * 10 ** (0.4 * (true - _DEPTH[b]))) ** 2)
        obs = true + rng.normal(0.0, err) + zero_point[seen]  # the quoted error leaves the calibration out
        bad = rng.uniform(size=t.size) < outliers
        obs[bad] += rng.choice([-1, 1], bad.sum()) * rng.uniform(0.5, 2.0, bad.sum())
        ts.append(t)
        ms.append(obs)
        es.append(err)
        bs.append(np.full(t.size, b))
        amps[b], means[b] = float(amp), float(mean)
    truth = {"period": float(period), "type": "ab" if ab else "c", "epoch": float(epoch), "rise": float(rise),
             "amplitude": amps, "mean": means, "n_epochs": int(times.size)}
    order = np.argsort(np.concatenate(ts), kind="stable")
    t_all, mag, err_all, band = (np.concatenate(a)[order] for a in (ts, ms, es, bs))
    return SyntheticStar(t_all, mag, err_all, band, truth)


def stripe82_like(seed: int, n_stars: int, **kw) -> list[SyntheticStar]:
    """``n_stars`` stars from one seeded generator (the same seed gives the same stars)."""
    rng = np.random.default_rng(seed)
    return [make_star(rng, **kw) for _ in range(n_stars)]
