"""Priors of the joint TTV fit: one-dimensional prior transforms and the per-planet prior configuration.

Each body (a transiting planet, or a non-transiting perturber) has five parameters: mass (Earth masses),
period (days, osculating at the integration start), a phase (``t0``, the time of a reference transit, for a
transiting planet; ``mean_longitude`` at the integration start for a perturber), eccentricity and argument of
pericentre ``omega``. The sampler works in (e, omega) with omega periodic; e cos omega and e sin omega are
reported beside them. Eccentricity priors: ``rayleigh`` (scale ``eccentricity_scale``, truncated at
``eccentricity_max``), ``sqrt_uniform`` (sqrt(e) uniform on [0, sqrt(e_max)]), ``uniform``, or
``sqrt_e_normal``: sqrt(e) cos omega and sqrt(e) sin omega each normal(0, ``eccentricity_scale``), the
parametrisation of ttvnest (Agarwal et al.), which with omega uniform is p(e) ~ exp(-e / (2 scale^2)), truncated
at ``eccentricity_max``. Mass priors: log-uniform, uniform, or ``normal`` (``mass_normal`` = [mean, sigma] in
Earth masses, truncated to ``mass_earth``) for a mass measured elsewhere, e.g. by radial velocities.
The sampler takes the eccentricity in polar (e, omega) or Cartesian coordinates (``eccentricity_priors``):
the same prior, but sqrt(e) cos omega, sqrt(e) sin omega (e cos omega, e sin omega for Rayleigh) have no
singularity at e = 0 and keep a near-resonant pair's eccentricity degeneracy a straight valley.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

M_EARTH_MSUN = 3.003489596e-6  # IAU 2015 nominal GM_earth / GM_sun
KINDS = ("uniform", "log", "rayleigh", "sqrt_uniform", "sqrt_e_normal", "normal")
BODY_PARAMETERS = ("mass", "period", "phase", "eccentricity", "omega")
EccCoordinates = Literal["polar", "cartesian"]
ECC_COORDINATES: tuple[str, ...] = get_args(EccCoordinates)
# eccentricity prior -> its Cartesian pair (components independent, e_max cut by the disc)
CARTESIAN_KINDS = {"sqrt_e_normal": ("secosw", "sesinw"), "uniform": ("secosw", "sesinw"),
                   "rayleigh": ("ecosw", "esinw")}
UNITS = {"mass": "M_earth", "period": "d", "t0": "d", "mean_longitude": "deg", "eccentricity": "", "omega": "deg"}


@dataclass(frozen=True)
class Prior:
    """A one-dimensional prior on [lo, hi] (lo == hi: held fixed); ``scale`` is the Rayleigh, sqrt_e_normal or
    normal sigma, ``mean`` the normal's mean (normal priors are truncated to [lo, hi]); ``disc`` marks one of
    the two Cartesian eccentricity components, whose point must also lie within that radius of the origin."""

    name: str
    lo: float
    hi: float
    kind: str = "uniform"  # one of KINDS
    periodic: bool = False
    scale: float = 0.0
    unit: str = ""
    mean: float = 0.0
    disc: float = 0.0  # > 0: one component of a point held inside a disc of this radius (ECC_COORDINATES)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"prior {self.name}: kind {self.kind!r} is not one of {KINDS}")
        if not self.hi >= self.lo:
            raise ValueError(f"prior {self.name}: upper bound {self.hi} below lower bound {self.lo}")
        if self.kind == "log" and self.lo <= 0:
            raise ValueError(f"prior {self.name}: log-uniform needs positive bounds, got [{self.lo}, {self.hi}]")
        if self.kind in ("rayleigh", "sqrt_e_normal", "normal") and not self.scale > 0:
            raise ValueError(f"prior {self.name}: a {self.kind} prior needs a positive scale")

    @property
    def fixed(self) -> bool:
        return self.lo == self.hi

    def transform(self, u: float) -> float:
        """Unit interval -> parameter (the inverse cumulative distribution)."""
        if self.kind == "log":
            return float(np.exp(np.log(self.lo) + u * (np.log(self.hi) - np.log(self.lo))))
        if self.kind == "sqrt_uniform":
            return float((np.sqrt(self.lo) + u * (np.sqrt(self.hi) - np.sqrt(self.lo))) ** 2)
        if self.kind == "rayleigh":
            c_lo, c_hi = (1 - np.exp(-0.5 * (b / self.scale) ** 2) for b in (self.lo, self.hi))
            return float(self.scale * np.sqrt(-2 * np.log1p(-(c_lo + u * (c_hi - c_lo)))))
        if self.kind == "sqrt_e_normal":  # exponential in e with mean 2 scale^2
            c_lo, c_hi = (-np.expm1(-b / (2 * self.scale**2)) for b in (self.lo, self.hi))
            return float(-2 * self.scale**2 * np.log1p(-(c_lo + u * (c_hi - c_lo))))
        if self.kind == "normal":
            from scipy.special import ndtr, ndtri  # here: planning imports this module; scipy costs it time

            c_lo, c_hi = (ndtr((b - self.mean) / self.scale) for b in (self.lo, self.hi))
            return float(np.clip(self.mean + self.scale * ndtri(c_lo + u * (c_hi - c_lo)), self.lo, self.hi))
        return float(self.lo + u * (self.hi - self.lo))

    def describe(self) -> dict:
        out = {"kind": "fixed" if self.fixed else self.kind, "lo": self.lo, "hi": self.hi, "unit": self.unit}
        if self.kind in ("rayleigh", "sqrt_e_normal", "normal"):
            out["scale"] = self.scale
        if self.kind == "normal":
            out["mean"] = self.mean
        if self.disc:
            out["disc"] = self.disc
        return out


def _pair(v, name: str, positive: bool = False):
    if v is None:
        return v
    if len(v) != 2 or not float(v[1]) >= float(v[0]):
        raise ValueError(f"{name}: expected [low, high] with high >= low, got {v}")
    if positive and float(v[0]) <= 0:
        raise ValueError(f"{name}: bounds must be positive, got {v}")
    return [float(v[0]), float(v[1])]


class BodyPriors(BaseModel):
    """Priors of one planet. Unset fields take the config's ``planet_defaults``; periods and phases of a
    transiting planet default to windows around its linear ephemeris."""

    model_config = ConfigDict(extra="forbid")

    mass_earth: list[float] | None = Field(None, description="Mass prior [lo, hi] in Earth masses.")
    mass_prior: Literal["uniform", "log", "normal"] | None = Field(
        None, description="uniform, log(-uniform) or normal (mass_normal, truncated to mass_earth) in mass.")
    mass_normal: list[float] | None = Field(None, description="normal mass prior: [mean, sigma] in Earth masses.")
    period: list[float] | None = Field(None, description="Period window [lo, hi] (days).")
    period_ratio: list[float] | None = Field(None, description="Perturbers: period window as multiples of the "
                                             "shortest transiting planet's period (when period is not set).")
    period_window: float | None = Field(None, gt=0, description="Transiting planets: half-width of the period "
                                        "window as a fraction of the linear-ephemeris period.")
    t0_window_days: float | None = Field(None, gt=0, description="Transiting planets: half-width (days) of the "
                                         "reference transit time window around the linear ephemeris.")
    eccentricity_prior: Literal["rayleigh", "sqrt_uniform", "uniform", "sqrt_e_normal"] | None = None
    eccentricity_scale: float | None = Field(None, gt=0, description="Rayleigh sigma of e, or sqrt_e_normal "
                                             "sigma of sqrt(e) cos omega and sqrt(e) sin omega.")
    eccentricity_max: float | None = Field(None, ge=0, lt=1, description="Upper eccentricity bound; 0 fixes a "
                                           "circular orbit.")
    inclination_deg: float | None = Field(None, gt=0, le=180, description="Orbital inclination (held fixed; "
                                          "a transiting planet's comes from its light-curve fit).")

    @field_validator("mass_earth", "period", "period_ratio")
    @classmethod
    def _positive(cls, v, info):
        return _pair(v, info.field_name, positive=True)

    @field_validator("mass_normal")
    @classmethod
    def _mean_sigma(cls, v):
        if v is not None and (len(v) != 2 or not float(v[1]) > 0):
            raise ValueError(f"mass_normal: expected [mean, sigma] with sigma > 0, got {v}")
        return v if v is None else [float(v[0]), float(v[1])]

    @model_validator(mode="after")
    def _normal_needs_mass_normal(self):
        if self.mass_prior == "normal" and self.mass_normal is None:
            raise ValueError("mass_prior normal needs mass_normal: [mean, sigma] (Earth masses)")
        return self

    def merged(self, defaults: "BodyPriors") -> "BodyPriors":
        """These priors with unset fields taken from ``defaults``."""
        mine = self.model_dump(exclude_none=True, exclude={"name"})
        return BodyPriors(**(defaults.model_dump(exclude_none=True, exclude={"name"}) | mine))


class PerturberPriors(BodyPriors):
    """A non-transiting planet: its name and priors (a period or a period_ratio window is required)."""

    name: str = Field(..., min_length=1)


DEFAULTS = BodyPriors(mass_earth=[0.1, 1000.0], mass_prior="log", period_window=0.01, t0_window_days=0.2,
                      period_ratio=[1.3, 4.0], eccentricity_prior="rayleigh", eccentricity_scale=0.05,
                      eccentricity_max=0.5)


def body_priors(name: str, p: BodyPriors, *, transiting: bool, period: float | None = None,
                t0: float | None = None, shortest_period: float | None = None,
                coordinates: str = "polar") -> list[Prior]:
    """The five priors of one body (names ``{name}:{parameter}``) from its merged configuration; the
    eccentricity in the sampler's ``coordinates`` (``eccentricity_priors``)."""
    mass = p.mass_earth or [0.1, 1000.0]
    mean, sigma = p.mass_normal if p.mass_prior == "normal" and p.mass_normal else (0.0, 0.0)
    out = [Prior(f"{name}:mass", mass[0], mass[1], p.mass_prior or "log", scale=sigma, unit="M_earth", mean=mean)]
    if p.period is not None:
        lo, hi = p.period
    elif transiting:
        assert period is not None
        w = (p.period_window or 0.01) * period
        lo, hi = period - w, period + w
    else:
        if shortest_period is None or p.period_ratio is None:
            raise ValueError(f"perturber {name}: set period or period_ratio")
        lo, hi = (r * shortest_period for r in p.period_ratio)
    out.append(Prior(f"{name}:period", lo, hi, "uniform", unit="d"))
    if transiting:
        assert t0 is not None
        w = p.t0_window_days or 0.2
        out.append(Prior(f"{name}:t0", t0 - w, t0 + w, "uniform", unit="d"))
    else:
        out.append(Prior(f"{name}:mean_longitude", 0.0, 360.0, "uniform", periodic=True, unit="deg"))
    e_max = 0.5 if p.eccentricity_max is None else p.eccentricity_max
    out += eccentricity_priors(name, p.eccentricity_prior or "rayleigh", p.eccentricity_scale or 0.05, e_max,
                               coordinates)
    return out


def eccentricity_priors(name: str, kind: str, scale: float, e_max: float, coordinates: str = "polar") -> list[Prior]:
    """The two eccentricity parameters of one body, in the sampler's ``coordinates`` (ECC_COORDINATES).

    ``polar``: e (prior ``kind``) and omega (uniform, periodic). ``cartesian``: the same prior on the plane,
    sqrt(e) cos w and sqrt(e) sin w (e cos w and e sin w for ``rayleigh``, which is normal in them) held inside
    the disc e <= e_max. Near-resonant TTVs constrain a difference of the planets' complex eccentricities, a
    straight valley in Cartesian coordinates that polar ones bend around e = 0, where omega is undefined."""
    if e_max == 0:  # circular: e and omega drop out of the sampler
        return [Prior(f"{name}:eccentricity", 0.0, 0.0, kind, scale=scale),
                Prior(f"{name}:omega", 90.0, 90.0, unit="deg")]
    if coordinates == "polar":
        return [Prior(f"{name}:eccentricity", 0.0, e_max, kind, scale=scale),
                Prior(f"{name}:omega", 0.0, 360.0, "uniform", periodic=True, unit="deg")]
    if coordinates != "cartesian":
        raise ValueError(f"{name}: eccentricity_coordinates {coordinates!r} is not one of {ECC_COORDINATES}")
    if kind not in CARTESIAN_KINDS:
        raise ValueError(f"{name}: eccentricity_prior {kind!r} has no Cartesian form; use one of {CARTESIAN_KINDS} "
                         "or eccentricity_coordinates polar")
    (x, y), radius = CARTESIAN_KINDS[kind], (e_max if kind == "rayleigh" else float(np.sqrt(e_max)))
    comp = "uniform" if kind == "uniform" else "normal"
    return [Prior(f"{name}:{c}", -radius, radius, comp, scale=scale if comp == "normal" else 0.0, disc=radius)
            for c in (x, y)]


def log_disc_fraction(p: Prior) -> float:
    """ln of the prior mass of a Cartesian eccentricity pair (each component ``p``) inside its disc: the
    sampler draws the pair on the square [-disc, disc]^2 and gives the corners no likelihood, so this is what
    its evidence lacks against the prior truncated to the disc."""
    if p.kind == "uniform":
        return float(np.log(np.pi / 4))
    from scipy.special import erf

    z = p.disc / p.scale
    return float(np.log(-np.expm1(-0.5 * z * z)) - 2 * np.log(erf(z / np.sqrt(2))))
