"""TTV forward model, likelihood and priors: TTVFast for a known transiting planet plus one perturber.

Plain functions and small picklable classes, so the science is testable without the task and a
multiprocessing pool can ship the likelihood to its workers.

Conventions (the same as ``openastro_parsl.sim.planet``, which made the demo's truth): TTVFast Jacobi
elements, masses in solar masses, periods in days, angles in degrees, G in AU^3 day^-2 Msun^-1. Both orbits
share the node (longnode 0) and the inclination (default 90 deg); a transit happens when the argument of
latitude (omega + true anomaly) is 90 deg.

The known planet ``b`` is circular; its osculating period is the linear-ephemeris period and its orbit is
phased so that it transits at the ephemeris time of the first observed epoch. The remaining linear freedom
(a shift of b's epoch and of its mean period) is profiled out of every likelihood call by weighted least
squares: transit times depend on those two numbers almost exactly linearly, the profile equals the marginal
likelihood under flat priors up to a constant that does not depend on the perturber, and it removes two
nuisance dimensions from the sampler. The profiled shifts are kept as "blobs" and reported per sample.

Periods are osculating Jacobi periods at the integration start (half a period before the first observed
transit). They differ from mean periods, and from osculating periods at another epoch, by ~(m/M*) P: a few
1e-3 d for the demo's planets, far inside the posterior widths transit times allow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import ttvfast
from ttvfast.models import Planet

from ...astro.ephemeris import fit_linear_ephemeris as linear_ephemeris

G_AU3_DAY2_MSUN = 0.000295994511  # TTVFast's G
LOGL_REJECT = -1e100  # likelihood of unphysical / unstable draws (finite: dynesty rejects it like -inf)

# name, unit, prior kind, periodic
PARAMETERS = {
    "mass": ("Msun", "log", False),            # perturber mass
    "period": ("d", "log", False),             # perturber osculating period at the integration start
    "eccentricity": ("", "uniform", False),
    "omega": ("deg", "uniform", True),         # argument of pericentre
    "mean_longitude": ("deg", "uniform", True),  # omega + mean anomaly at the integration start
    "known_mass": ("Msun", "log", False),      # the transiting planet's mass (fixed unless given a range)
}


class TtvDataError(ValueError):
    """The transit-times table cannot be used (missing columns, bad errors, too few transits)."""


@dataclass(frozen=True)
class TransitData:
    """Observed transit times of the known planet, relative to ``t_ref`` (its first observed epoch)."""

    epochs: np.ndarray  # integer epochs as in the table
    times: np.ndarray  # days since t_ref
    errors: np.ndarray  # days (jitter already added in quadrature)
    t_ref: float  # linear-ephemeris time of the first observed epoch, in the table's time system
    period: float  # linear-ephemeris period (days), refitted to these times
    epoch_ref: int

    @property
    def n(self) -> int:
        return len(self.epochs)

    @property
    def rel_epochs(self) -> np.ndarray:
        return self.epochs - self.epoch_ref

    @classmethod
    def from_table(cls, table, *, jitter_days: float = 0.0, name: str = "transitTimes") -> "TransitData":
        """Read ``epoch, t_obs, t_obs_err`` (days unless the columns carry units); refit the ephemeris."""
        missing = [c for c in ("epoch", "t_obs", "t_obs_err") if c not in table.colnames]
        if missing:
            raise TtvDataError(f"{name}: missing column(s) {missing}; have {table.colnames}")
        epochs = np.asarray(table["epoch"], dtype=float)
        if np.any(np.abs(epochs - np.round(epochs)) > 1e-6):
            raise TtvDataError(f"{name}: epochs must be integers, got {epochs}")
        t = _days(table["t_obs"])
        err = _days(table["t_obs_err"])
        good = np.isfinite(t) & np.isfinite(err)
        if np.any(good & (err <= 0)):
            raise TtvDataError(f"{name}: non-positive t_obs_err for epochs {epochs[good & (err <= 0)].astype(int)}")
        epochs, t, err = np.round(epochs[good]).astype(int), t[good], err[good]
        if len(np.unique(epochs)) != len(epochs):
            raise TtvDataError(f"{name}: repeated epochs {sorted(epochs)}")
        order = np.argsort(epochs)
        epochs, t, err = epochs[order], t[order], err[order]
        if len(epochs) < 3:
            raise TtvDataError(f"{name}: {len(epochs)} usable transit time(s); a TTV fit needs at least 3")
        t0, period, _ = fit_linear_ephemeris(epochs, t, err)
        if np.median(err) > 0.05 * period:
            raise TtvDataError(f"{name}: median t_obs_err {np.median(err):.3g} d is over 5% of the period "
                               f"{period:.4g} d; are the errors in days?")
        e_ref = int(epochs[0])
        t_ref = t0 + period * e_ref
        sigma = np.sqrt(err**2 + jitter_days**2)
        return cls(epochs, t - t_ref, sigma, float(t_ref), float(period), e_ref)


def _days(col) -> np.ndarray:
    unit = getattr(col, "unit", None)
    values = np.asarray(getattr(col, "value", col), dtype=float)
    if unit is None or str(unit) in ("", "d", "day", "days"):
        return values
    import astropy.units as u

    return (np.asarray(col, dtype=float) * u.Unit(unit)).to_value(u.day)


def fit_linear_ephemeris(epochs, times, errors) -> tuple[float, float, float]:
    """Weighted least-squares linear ephemeris t = t0 + P * E (``astro.ephemeris``): (t0, P, chi2)."""
    eph = linear_ephemeris(epochs, times, errors)
    return eph.t0, eph.period, eph.chi2


@dataclass(frozen=True)
class Prior:
    """A one-dimensional prior: log-uniform or uniform on [lo, hi]; lo == hi holds the parameter fixed."""

    name: str
    lo: float
    hi: float
    kind: str = "uniform"  # uniform | log
    periodic: bool = False

    def __post_init__(self):
        if not self.hi >= self.lo:
            raise ValueError(f"prior {self.name}: upper bound {self.hi} below lower bound {self.lo}")
        if self.kind == "log" and self.lo <= 0:
            raise ValueError(f"prior {self.name}: log-uniform needs positive bounds, got [{self.lo}, {self.hi}]")

    @property
    def fixed(self) -> bool:
        return self.lo == self.hi

    def transform(self, u: float) -> float:
        if self.kind == "log":
            return float(np.exp(np.log(self.lo) + u * (np.log(self.hi) - np.log(self.lo))))
        return float(self.lo + u * (self.hi - self.lo))

    def describe(self) -> dict:
        return {"kind": "fixed" if self.fixed else ("log-uniform" if self.kind == "log" else "uniform"),
                "lo": self.lo, "hi": self.hi, "unit": PARAMETERS[self.name][0]}


def make_prior(name: str, bounds) -> Prior:
    unit, kind, periodic = PARAMETERS[name]
    lo, hi = (float(bounds[0]), float(bounds[1])) if np.ndim(bounds) else (float(bounds), float(bounds))
    full_circle = periodic and np.isclose(hi - lo, 360.0)
    return Prior(name, lo, hi, kind, full_circle)


def semi_major_axis(period, mass_total):
    """AU, from Kepler's third law with TTVFast's G."""
    return (G_AU3_DAY2_MSUN * mass_total * np.asarray(period) ** 2 / (4 * np.pi**2)) ** (1 / 3)


def hill_separation(stellar_mass, m1, p1, e1, m2, p2, e2) -> float:
    """Gap between pericentre of the outer and apocentre of the inner orbit, in mutual Hill radii."""
    (mi, pi_, ei), (mo, po, eo) = sorted([(m1, p1, e1), (m2, p2, e2)], key=lambda x: x[1])
    ai = semi_major_axis(pi_, stellar_mass + mi)
    ao = semi_major_axis(po, stellar_mass + mo)
    r_hill = ((mi + mo) / (3 * stellar_mass)) ** (1 / 3) * (ai + ao) / 2
    return float((ao * (1 - eo) - ai * (1 + ei)) / r_hill)


@dataclass
class TtvModel:
    """The known planet (circular, on its linear ephemeris) plus one perturber, for one target's transits."""

    data: TransitData
    priors: tuple[Prior, ...]
    stellar_mass: float = 1.0
    inclination: float = 90.0
    timestep_fraction: float = 0.05
    min_hill_separation: float = 2 * np.sqrt(3)
    free: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        names = [p.name for p in self.priors]
        if sorted(names) != sorted(PARAMETERS):
            raise ValueError(f"priors must cover {sorted(PARAMETERS)}, got {names}")
        self.priors = tuple(sorted(self.priors, key=lambda p: list(PARAMETERS).index(p.name)))
        self.free = tuple(p.name for p in self.priors if not p.fixed)
        design = np.vstack([np.ones(self.data.n), self.data.rel_epochs.astype(float)]).T
        self._design = design / self.data.errors[:, None]
        self._span = int(self.data.rel_epochs[-1])
        self._rel_epochs = self.data.rel_epochs

    # --- priors -------------------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.free)

    @property
    def periodic(self) -> list[int]:
        return [i for i, n in enumerate(self.free) if self.prior(n).periodic]

    def prior(self, name: str) -> Prior:
        return next(p for p in self.priors if p.name == name)

    def prior_transform(self, u):
        """Unit cube -> physical parameters (the free ones, in ``self.free`` order)."""
        return np.array([self.prior(n).transform(x) for n, x in zip(self.free, u)])

    def params(self, x) -> dict[str, float]:
        """All six parameters from a vector of free ones."""
        out = {p.name: p.lo for p in self.priors}
        out.update({n: float(v) for n, v in zip(self.free, x)})
        return out

    # --- forward model --------------------------------------------------------------------------------
    def transit_times(self, p: dict[str, float]) -> np.ndarray:
        """TTVFast transit times of the known planet at the observed epochs (days since t_ref; NaN if absent)."""
        d = self.data
        known = Planet(p["known_mass"], d.period, 0.0, self.inclination, 0.0, 90.0, 180.0)
        omega = p["omega"] % 360.0
        pert = Planet(p["mass"], p["period"], p["eccentricity"], self.inclination, 0.0, omega,
                      (p["mean_longitude"] - omega) % 360.0)
        planets, k = ([known, pert], 0) if p["period"] >= d.period else ([pert, known], 1)
        # Integration starts half a period before the first observed transit, at time 0 (TTVFast marks
        # unused output slots with time -2, so all real times must be positive).
        t_end = (self._span + 1.0) * d.period
        res = ttvfast.ttvfast(planets, self.stellar_mass, 0.0, d.period * self.timestep_fraction, t_end)
        # The wrapper returns fixed-length lists (5000 slots, mostly unused); converting only the slots that
        # can hold transits of either planet is most of a call's Python cost saved.
        n = int(t_end / d.period + t_end / p["period"]) + 4
        idx, epoch, times = (np.asarray(c[:n]) for c in res["positions"][:3])
        sel = (idx == k) & (times > 0) & (epoch >= 0)
        out = np.full(self._span + 1, np.nan)
        ep = epoch[sel].astype(int)
        keep = ep <= self._span
        out[ep[keep]] = times[sel][keep]
        return out[self._rel_epochs] - 0.5 * d.period

    def profile(self, model_times: np.ndarray) -> tuple[float, float, float]:
        """chi2 after the best shift of the known planet's epoch (dt0) and period (dP): (chi2, dt0, dP)."""
        r = (self.data.times - model_times) / self.data.errors
        coef, *_ = np.linalg.lstsq(self._design, r, rcond=None)
        chi2 = float(np.sum((r - self._design @ coef) ** 2))
        return chi2, float(coef[0]), float(coef[1])

    @property
    def _norm(self) -> float:
        return float(-np.sum(np.log(np.sqrt(2 * np.pi) * self.data.errors)))

    def loglike(self, x):
        """Gaussian log-likelihood of the observed times; returns (logl, blob=[dt0, dP] in days)."""
        p = self.params(x)
        if p["eccentricity"] >= 1 or hill_separation(self.stellar_mass, p["known_mass"], self.data.period, 0.0,
                                                     p["mass"], p["period"], p["eccentricity"]) \
                < self.min_hill_separation:
            return LOGL_REJECT, np.zeros(2)
        model = self.transit_times(p)
        if not np.all(np.isfinite(model)):
            return LOGL_REJECT, np.zeros(2)
        chi2, dt0, dp = self.profile(model)
        return -0.5 * chi2 + self._norm, np.array([dt0, dp])

    def null_loglike(self) -> float:
        """The no-perturber model under the same convention: a profiled linear ephemeris."""
        _, _, chi2 = fit_linear_ephemeris(self.data.rel_epochs, self.data.times, self.data.errors)
        return -0.5 * chi2 + self._norm

    def derived(self, samples: np.ndarray, blobs: np.ndarray) -> dict[str, np.ndarray]:
        """Per-sample columns: all parameters, the mean anomaly, and the known planet's profiled ephemeris
        (``known_t0`` = t_ref + dt0, ``known_period`` = linear period + dP: the line added to b's model
        transit times, not osculating elements)."""
        cols = {n: np.full(len(samples), self.prior(n).lo) for n in PARAMETERS}
        for i, n in enumerate(self.free):
            cols[n] = np.asarray(samples[:, i], dtype=float)
        cols["omega"] = cols["omega"] % 360.0
        cols["mean_longitude"] = cols["mean_longitude"] % 360.0
        cols["mean_anomaly"] = (cols["mean_longitude"] - cols["omega"]) % 360.0
        blobs = np.asarray(blobs, dtype=float).reshape(len(samples), 2)
        cols["known_t0"] = self.data.t_ref + blobs[:, 0]
        cols["known_period"] = self.data.period + blobs[:, 1]
        return cols

    def integration_start(self) -> float:
        """Epoch of the osculating elements, in the table's time system."""
        return self.data.t_ref - 0.5 * self.data.period


# --- the model a sampling process works on ------------------------------------------------------------
# dynesty pickles its likelihood into checkpoints and ships it to pool workers on every call. Module-level
# functions reading one model per process make both cheap and let a checkpoint written with a pool be
# resumed without one (and the reverse): the model itself is installed by ``activate`` (pool initializer).
_ACTIVE: TtvModel | None = None


def activate(model: TtvModel) -> None:
    global _ACTIVE
    _ACTIVE = model


def active_loglike(x):
    return _ACTIVE.loglike(x)


def active_prior_transform(u):
    return _ACTIVE.prior_transform(u)
