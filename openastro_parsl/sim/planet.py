"""OA-T1 b: transit times from a real N-body (TTVFast) run, transit shapes from batman.

A near-2:1 perturber (c) makes the transit times deviate from a linear ephemeris by
several minutes over the season, so a pipeline's TTV step has a real signal to find.
The system is fixed by design (not by seed): its phase was chosen so that enough
transits fall in dark time at the slt40 sites during the season.
"""

from __future__ import annotations

from dataclasses import dataclass

import batman
import numpy as np
import ttvfast
from ttvfast.models import Planet

STELLAR_MASS = 1.0  # Msun
AU_RSUN = 215.032
G_AU3_DAY2_MSUN = 0.000295994511  # TTVFast's G


@dataclass(frozen=True)
class PlanetInput:
    """TTVFast Jacobi elements at the integration start (angles in degrees)."""

    name: str
    mass: float  # Msun
    period: float  # days
    eccentricity: float
    inclination: float
    longnode: float
    argument: float
    mean_anomaly: float

    def ttvfast(self) -> Planet:
        return Planet(self.mass, self.period, self.eccentricity, self.inclination,
                      self.longnode, self.argument, self.mean_anomaly)


# b: a hot Jupiter (0.6 MJup); c: a ~0.2 MJup perturber just wide of 2:1 (ratio 2.03).
PLANET_B = PlanetInput("b", 5.7e-4, 2.80, 0.0, 88.5, 0.0, 90.0, 90.0)
PLANET_C = PlanetInput("c", 2.0e-4, 2.80 * 2.03, 0.0, 85.0, 0.0, 90.0, 120.0)
RP_RS = 0.12
A_RS = 8.0
INCLINATION = 88.5
LIMB_DARKENING = {"g": (0.62, 0.16), "r": (0.43, 0.23)}  # quadratic, Sun-like host
TTV_T0 = 61095.0
TTV_DT = 0.05  # ~P_b / 56


@dataclass
class TransitSystem:
    transit_times: np.ndarray  # b, MJD (TDB ~ UTC here)
    epochs: np.ndarray  # TTVFast epoch numbers of b
    t0: float  # linear ephemeris reference (epoch 0)
    period: float
    t_end: float

    @property
    def o_minus_c_minutes(self) -> np.ndarray:
        return (self.transit_times - (self.t0 + self.period * self.epochs)) * 1440.0

    def predicted(self, epoch):
        """Linear-ephemeris prediction: what an observer would schedule on."""
        return self.t0 + self.period * np.asarray(epoch)

    def nearest_transit(self, t):
        t = np.asarray(t, dtype=float)
        i = np.abs(t[..., None] - self.transit_times).argmin(axis=-1)
        return i, self.transit_times[i]

    def _params(self, band: str, tc: float) -> batman.TransitParams:
        p = batman.TransitParams()
        p.t0 = tc
        p.per = self.period
        p.rp = RP_RS
        p.a = A_RS
        p.inc = INCLINATION
        p.ecc = 0.0
        p.w = 90.0
        p.limb_dark = "quadratic"
        p.u = list(LIMB_DARKENING[band])
        return p

    def relative_flux(self, t, band: str) -> np.ndarray:
        """Host flux / out-of-transit flux at times t, each centred on its nearest N-body transit."""
        t = np.atleast_1d(np.asarray(t, dtype=float))
        idx, _ = self.nearest_transit(t)
        out = np.ones_like(t)
        for i in np.unique(idx):
            sel = idx == i
            m = batman.TransitModel(self._params(band, float(self.transit_times[i])), t[sel])
            out[sel] = m.light_curve(self._params(band, float(self.transit_times[i])))
        return out

    def duration_hours(self) -> float:
        """T14 for a circular orbit."""
        b = A_RS * np.cos(np.deg2rad(INCLINATION))
        arg = np.sqrt((1 + RP_RS) ** 2 - b**2) / (A_RS * np.sin(np.deg2rad(INCLINATION)))
        return float(self.period / np.pi * np.arcsin(arg) * 24.0)

    def truth(self, observed_epochs) -> dict:
        a_au = (G_AU3_DAY2_MSUN * STELLAR_MASS * (PLANET_B.period) ** 2 / (4 * np.pi**2)) ** (1 / 3)
        oc = self.o_minus_c_minutes
        return {
            "host": "OA-T1",
            "name": "OA-T1 b",
            "stellar_mass_msun": STELLAR_MASS,
            "stellar_radius_rsun": float(a_au * AU_RSUN / A_RS),
            "ttvfast": {
                "t0": TTV_T0,
                "dt": TTV_DT,
                "t_end": self.t_end,
                "input_flag": 0,
                "coordinates": "Jacobi",
                "planets": [vars(p) for p in (PLANET_B, PLANET_C)],
            },
            "batman": {
                "rp": RP_RS,
                "a": A_RS,
                "inc": INCLINATION,
                "ecc": 0.0,
                "w": 90.0,
                "limb_dark": "quadratic",
                "u": {k: list(v) for k, v in LIMB_DARKENING.items()},
                "per": self.period,
                "t0": "nearest TTVFast transit time of each frame",
            },
            "transit_duration_hours": self.duration_hours(),
            "depth_approx": RP_RS**2,
            "transit_times": [float(x) for x in self.transit_times],
            "epochs": [int(x) for x in self.epochs],
            "linear_ephemeris": {"t0": self.t0, "period": self.period, "fit": "least squares over all transits above"},
            "o_minus_c_minutes": [float(x) for x in oc],
            "ttv_amplitude_minutes": float((oc.max() - oc.min()) / 2),
            "observed_epochs": sorted(int(e) for e in observed_epochs),
        }


def simulate_transits(t_end: float) -> TransitSystem:
    """Integrate b + c with TTVFast from TTV_T0 to t_end; fit a linear ephemeris to b."""
    res = ttvfast.ttvfast([PLANET_B.ttvfast(), PLANET_C.ttvfast()], STELLAR_MASS, TTV_T0, TTV_DT, t_end)
    idx, epoch, times, _rsky, _vsky = (np.asarray(c) for c in res["positions"])
    sel = (idx == 0) & (times > -1.0) & (epoch >= 0)  # unused slots are -2
    tt, ep = times[sel], epoch[sel].astype(int)
    order = np.argsort(ep)
    tt, ep = tt[order], ep[order]
    A = np.vstack([np.ones_like(tt), ep]).T
    t0, period = np.linalg.lstsq(A, tt, rcond=None)[0]
    return TransitSystem(tt, ep, float(t0), float(period), float(t_end))
