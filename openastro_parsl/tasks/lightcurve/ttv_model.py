"""TTV forward model and likelihood: TTVFast for every planet of a system at once.

Plain functions and small picklable classes, so the science is testable without the task and a
multiprocessing pool can ship the likelihood to its workers.

Conventions (the same as ``openastro_parsl.sim.planet``, which made the demo's truth): TTVFast Jacobi
elements ordered by period, masses passed in solar masses (sampled in Earth masses), periods in days, angles
in degrees, G in AU^3 day^-2 Msun^-1. All orbits share the node (longnode 0); inclinations are per body
(default 90 deg: coplanar, edge-on); a transit happens when the argument of latitude (omega + true anomaly) is 90 deg.

Every body has a free mass, period, phase, eccentricity and omega (``ttv_priors``). A transiting planet's
phase is ``t0``, the time of its first observed transit: its mean anomaly at the integration start is the
one that puts it at conjunction (true anomaly 90 - omega) at t0 on its osculating orbit. A perturber's phase
is its mean longitude at the integration start. Times are relative to ``t_ref`` (the earliest observed
transit) and the integration starts half the shortest transiting period before it (t_start, the epoch of
the osculating elements, from the data alone), so every TTVFast time is positive (TTVFast marks unused
output slots with -2); a t0 window reaching before t_start finds no transit there and is rejected.

The step is ``timestep_fraction`` of the shortest period in the model (not of one transiting planet's:
an interior perturber sets it), and ``step_check`` measures how far halving it moves the model times.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ttvfast.models import Planet, planets_to_params

from ...astro.ephemeris import fit_linear_ephemeris as linear_ephemeris
from .ttv_priors import CARTESIAN_KINDS, M_EARTH_MSUN, Prior, log_disc_fraction
from .ttvfast_core import transit_events

G_AU3_DAY2_MSUN = 0.000295994511  # TTVFast's G
LOGL_REJECT = -1e100  # likelihood of unphysical / unstable draws (finite: dynesty rejects it like -inf)


class TtvDataError(ValueError):
    """The transit-times table cannot be used (missing columns, bad errors, too few transits)."""


def fit_linear_ephemeris(epochs, times, errors) -> tuple[float, float, float]:
    """Weighted least-squares linear ephemeris t = t0 + P * E (``astro.ephemeris``): (t0, P, chi2)."""
    eph = linear_ephemeris(epochs, times, errors)
    return eph.t0, eph.period, eph.chi2


def _days(col) -> np.ndarray:
    unit = getattr(col, "unit", None)
    values = np.asarray(getattr(col, "value", col), dtype=float)
    if unit is None or str(unit) in ("", "d", "day", "days"):
        return values
    import astropy.units as u

    return (np.asarray(col, dtype=float) * u.Unit(unit)).to_value(u.day)


@dataclass(frozen=True)
class TransitData:
    """Observed transit times of one planet (absolute, in the table's time system) and its linear ephemeris."""

    name: str
    epochs: np.ndarray  # integer epochs as in the table
    times: np.ndarray  # days
    errors: np.ndarray  # days (jitter already added in quadrature)
    t0: float  # linear-ephemeris time of the first observed epoch
    period: float  # linear-ephemeris period (days), refitted to these times

    @property
    def n(self) -> int:
        return len(self.epochs)

    @classmethod
    def from_table(cls, table, *, name: str = "b", jitter_days: float = 0.0, where: str = "transitTimes",
                   min_transits: int = 3) -> "TransitData":
        """Read ``epoch, t_obs, t_obs_err`` (days unless the columns carry units); refit the ephemeris."""
        missing = [c for c in ("epoch", "t_obs", "t_obs_err") if c not in table.colnames]
        if missing:
            raise TtvDataError(f"{where}: missing column(s) {missing}; have {table.colnames}")
        epochs = np.asarray(table["epoch"], dtype=float)
        if np.any(np.abs(epochs - np.round(epochs)) > 1e-6):
            raise TtvDataError(f"{where}: epochs must be integers, got {epochs}")
        t, err = _days(table["t_obs"]), _days(table["t_obs_err"])
        good = np.isfinite(t) & np.isfinite(err)
        if np.any(good & (err <= 0)):
            rows = np.flatnonzero(good & (err <= 0))
            raise TtvDataError(f"{where}: non-positive t_obs_err in row(s) {rows.tolist()} "
                               f"(epochs {epochs[rows].astype(int).tolist()})")
        epochs, t, err = np.round(epochs[good]).astype(int), t[good], err[good]
        uniq, counts = np.unique(epochs, return_counts=True)
        if np.any(counts > 1):
            raise TtvDataError(f"{where}: repeated epochs {uniq[counts > 1].tolist()} (ingest with "
                               "--duplicates combine)")
        order = np.argsort(epochs)
        epochs, t, err = epochs[order], t[order], err[order]
        if len(epochs) < max(3, min_transits):
            raise TtvDataError(f"{where}: {len(epochs)} usable transit time(s); a TTV fit needs at least "
                               f"{max(3, min_transits)}")
        t0, period, _ = fit_linear_ephemeris(epochs - epochs[0], t, err)
        if np.median(err) > 0.05 * period:
            raise TtvDataError(f"{where}: median t_obs_err {np.median(err):.3g} d is over 5% of the period "
                               f"{period:.4g} d; are the errors in days?")
        sigma = np.sqrt(err**2 + jitter_days**2)
        return cls(name, epochs, t, sigma, float(t0), float(period))


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


def eccentricity_omega(x, y, power: int):
    """(e, omega in degrees, 0-360) from a Cartesian pair: (sqrt(e) cos w, sqrt(e) sin w) for ``power`` 2,
    (e cos w, e sin w) for 1; scalars or arrays."""
    return (x ** 2 + y ** 2) ** (power / 2), np.degrees(np.arctan2(y, x)) % 360.0


def mean_anomaly_at_conjunction(e: float, omega_deg: float) -> float:
    """Mean anomaly (deg) when the true anomaly is 90 - omega (the planet crosses the line of sight)."""
    f = np.deg2rad(90.0 - omega_deg)
    big_e = 2 * np.arctan2(np.sqrt(1 - e) * np.sin(f / 2), np.sqrt(1 + e) * np.cos(f / 2))
    return float(np.rad2deg(big_e - e * np.sin(big_e)))


@dataclass
class SystemModel:
    """Transiting planets (with data) and perturbers (without) around one star; the priors of all bodies."""

    data: tuple[TransitData, ...]
    perturbers: tuple[str, ...]
    priors: tuple[Prior, ...]
    stellar_mass: float = 1.0
    inclination: float = 90.0
    timestep_fraction: float = 0.05
    min_hill_separation: float = 2 * np.sqrt(3)
    inclinations: dict[str, float] = field(default_factory=dict)  # per body (deg); default ``inclination``
    free: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        self.bodies = tuple(d.name for d in self.data) + tuple(self.perturbers)
        names = {p.name for p in self.priors}
        # bodies whose eccentricity is sampled in Cartesian coordinates: (x, y, power), e = (x^2 + y^2)^(power/2)
        self.cartesian = {b: (f"{b}:{x}", f"{b}:{y}", 2 if x == "secosw" else 1)
                          for b in self.bodies for x, y in set(CARTESIAN_KINDS.values()) if f"{b}:{x}" in names}
        for b in self.bodies:
            phase = "t0" if b not in self.perturbers else "mean_longitude"
            ecc = self.cartesian[b][:2] if b in self.cartesian else (f"{b}:eccentricity", f"{b}:omega")
            need = {f"{b}:{k}" for k in ("mass", "period", phase)} | set(ecc)
            if not need <= names:
                raise ValueError(f"priors of {b} missing: {sorted(need - names)}")
        self._prior = {p.name: p for p in self.priors}
        self.free = tuple(p.name for p in self.priors if not p.fixed)
        # from the data alone, so the elements' epoch (and a posterior's meaning) does not move with the priors
        self.t_ref = float(min(d.times[0] for d in self.data))
        self.t_start = self.t_ref - 0.5 * min(d.period for d in self.data)  # epoch of the osculating elements
        self.t_end = float(max(d.times[-1] for d in self.data)) + 0.6 * max(d.period for d in self.data)
        self._norm = float(sum(-np.sum(np.log(np.sqrt(2 * np.pi) * d.errors)) for d in self.data))

    # --- priors -------------------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.free)

    @property
    def periodic(self) -> list[int]:
        return [i for i, n in enumerate(self.free) if self._prior[n].periodic]

    def prior(self, name: str) -> Prior:
        return self._prior[name]

    def prior_transform(self, u):
        """Unit cube -> physical parameters (the free ones, in ``self.free`` order)."""
        return np.array([self._prior[n].transform(x) for n, x in zip(self.free, u, strict=True)])

    def params(self, x) -> dict[str, float]:
        """Every parameter from a vector of free ones (e and omega from Cartesian components too)."""
        out = {p.name: p.lo for p in self.priors}
        out.update({n: float(v) for n, v in zip(self.free, x, strict=True)})
        for b, (xn, yn, power) in self.cartesian.items():
            e, w = eccentricity_omega(out[xn], out[yn], power)
            out[f"{b}:eccentricity"], out[f"{b}:omega"] = float(e), float(w)
        return out

    def in_discs(self, p: dict[str, float]) -> bool:
        """Every Cartesian eccentricity pair inside its disc (e <= eccentricity_max); the prior is zero outside."""
        return all(p[xn] ** 2 + p[yn] ** 2 <= self._prior[xn].disc ** 2 for xn, yn, _ in self.cartesian.values())

    @property
    def log_evidence_offset(self) -> float:
        """Add to the sampler's ln Z for the evidence under the disc-truncated priors (``log_disc_fraction``)."""
        return -sum(log_disc_fraction(self._prior[xn]) for xn, _, _ in self.cartesian.values())

    # --- forward model --------------------------------------------------------------------------------
    def timestep(self, p: dict[str, float]) -> float:
        return self.timestep_fraction * min(p[f"{b}:period"] for b in self.bodies)

    def _planet(self, b: str, p: dict[str, float]) -> Planet:
        e, w, period = p[f"{b}:eccentricity"], p[f"{b}:omega"] % 360.0, p[f"{b}:period"]
        if b in self.perturbers:
            mean_anomaly = (p[f"{b}:mean_longitude"] - w) % 360.0
        else:
            m_conj = mean_anomaly_at_conjunction(e, w)
            mean_anomaly = (m_conj - 360.0 * (p[f"{b}:t0"] - self.t_start) / period) % 360.0
        inc = self.inclinations.get(b, self.inclination)
        return Planet(p[f"{b}:mass"] * M_EARTH_MSUN, period, e, inc, 0.0, w, mean_anomaly)

    def transit_times(self, p: dict[str, float], dt: float | None = None) -> list[np.ndarray] | None:
        """Model times (absolute) of every transiting planet at its observed epochs; None if one is missing."""
        order = sorted(self.bodies, key=lambda b: p[f"{b}:period"])
        planets = [self._planet(b, p) for b in order]
        span = self.t_end - self.t_start
        n = int(sum(span / p[f"{b}:period"] for b in self.bodies)) + 4 * len(self.bodies)
        try:
            events = transit_events(planets_to_params(self.stellar_mass, planets), dt or self.timestep(p), 0.0,
                                    span, len(planets), n)
        except ValueError:  # a hyperbolic orbit, a Kepler step that does not converge: not a usable draw
            return None
        idx, times = events["planet"], events["time"]
        out = []
        for d in self.data:
            k = order.index(d.name)
            tk = np.sort(times[(idx == k) & (times > 0)]) + self.t_start
            if len(tk) == 0:
                return None
            period = p[f"{d.name}:period"]
            i0 = int(np.argmin(np.abs(tk - p[f"{d.name}:t0"])))
            if abs(tk[i0] - p[f"{d.name}:t0"]) > 0.25 * period:
                return None
            want = i0 + (d.epochs - d.epochs[0])
            if want[-1] >= len(tk) or want[0] < 0:
                return None
            out.append(tk[want])
        return out

    def stable(self, p: dict[str, float]) -> bool:
        """Every adjacent pair at least ``min_hill_separation`` mutual Hill radii apart, e < 1."""
        order = sorted(self.bodies, key=lambda b: p[f"{b}:period"])
        m = {b: p[f"{b}:mass"] * M_EARTH_MSUN for b in order}
        for a, b in zip(order, order[1:], strict=False):
            if p[f"{a}:eccentricity"] >= 1 or p[f"{b}:eccentricity"] >= 1:
                return False
            if hill_separation(self.stellar_mass, m[a], p[f"{a}:period"], p[f"{a}:eccentricity"], m[b],
                               p[f"{b}:period"], p[f"{b}:eccentricity"]) < self.min_hill_separation:
                return False
        return True

    def chi2(self, model: list[np.ndarray]) -> float:
        return float(sum(np.sum(((d.times - m) / d.errors) ** 2) for d, m in zip(self.data, model, strict=True)))

    def loglike(self, x) -> float:
        """Gaussian log-likelihood of every observed transit time."""
        p = self.params(x)
        if not self.in_discs(p) or not self.stable(p):
            return LOGL_REJECT
        model = self.transit_times(p)
        if model is None or not all(np.all(np.isfinite(m)) for m in model):
            return LOGL_REJECT
        return -0.5 * self.chi2(model) + self._norm

    def step_check(self, x) -> dict:
        """How far halving the step moves the model times at ``x``: the largest shift in sigma and in minutes."""
        p = self.params(x)
        dt = self.timestep(p)
        a, b = self.transit_times(p, dt), self.transit_times(p, dt / 2)
        if a is None or b is None:
            return {"timestep_days": dt, "max_shift_sigma": float("nan"), "max_shift_minutes": float("nan")}
        shift = [np.abs(u - v) for u, v in zip(a, b, strict=True)]
        sig = max(float(np.max(s / d.errors)) for s, d in zip(shift, self.data, strict=True))
        return {"timestep_days": dt, "max_shift_sigma": sig,
                "max_shift_minutes": max(float(np.max(s)) for s in shift) * 1440.0}

    def without_perturbers(self) -> "SystemModel":
        """The same transiting planets and priors with no perturber (for the evidence comparison)."""
        keep = tuple(pr for pr in self.priors if pr.name.split(":")[0] not in self.perturbers)
        return SystemModel(self.data, (), keep, self.stellar_mass, self.inclination, self.timestep_fraction,
                           self.min_hill_separation, self.inclinations)

    def derived(self, samples: np.ndarray) -> dict[str, np.ndarray]:
        """Per-sample columns ``{body}:{parameter}`` plus mass in solar masses ratio, e cos w and e sin w."""
        cols = {p.name: np.full(len(samples), p.lo) for p in self.priors}
        for i, n in enumerate(self.free):
            cols[n] = np.asarray(samples[:, i], dtype=float)
        for b, (xn, yn, power) in self.cartesian.items():
            cols[f"{b}:eccentricity"], cols[f"{b}:omega"] = eccentricity_omega(cols[xn], cols[yn], power)
        for b in self.bodies:
            w = cols[f"{b}:omega"] % 360.0
            cols[f"{b}:omega"] = w
            if f"{b}:mean_longitude" in cols:
                cols[f"{b}:mean_longitude"] %= 360.0
            cols[f"{b}:mass_ratio"] = cols[f"{b}:mass"] * M_EARTH_MSUN / self.stellar_mass
            cols[f"{b}:ecosw"] = cols[f"{b}:eccentricity"] * np.cos(np.deg2rad(w))
            cols[f"{b}:esinw"] = cols[f"{b}:eccentricity"] * np.sin(np.deg2rad(w))
        return cols

    def describe(self) -> dict:
        return {"bodies": list(self.bodies), "transiting": [d.name for d in self.data],
                "perturbers": list(self.perturbers), "stellar_mass_msun": self.stellar_mass,
                "inclination_deg": {b: self.inclinations.get(b, self.inclination) for b in self.bodies},
                "timestep_fraction": self.timestep_fraction,
                "eccentricity_coordinates": {b: "cartesian" if b in self.cartesian else "polar" for b in self.bodies},
                "t_ref": self.t_ref, "integration_start": self.t_start, "integration_end": self.t_end,
                "coordinates": "Jacobi (TTVFast input_flag 0), bodies ordered by period"}


# --- the model a sampling process works on ------------------------------------------------------------
# dynesty pickles its likelihood into checkpoints and ships it to pool workers on every call. Module-level
# functions reading one model per process make both cheap and let a checkpoint written with a pool be
# resumed without one (and the reverse): the model itself is installed by ``activate`` (pool initializer).
_ACTIVE: SystemModel | None = None


def activate(model: SystemModel) -> None:
    global _ACTIVE
    _ACTIVE = model


def active_loglike(x):
    assert _ACTIVE is not None
    return _ACTIVE.loglike(x)


def active_prior_transform(u):
    assert _ACTIVE is not None
    return _ACTIVE.prior_transform(u)
