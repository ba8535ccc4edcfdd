"""Which known minor planets a frame's candidates could be: predict the bodies near them and match.

Two steps, so a full MPCORB (about 1.4 million orbits) costs one vectorised pass per frame: every orbit is
propagated once, geocentric and without light time (good to about a minute of arc), and only the bodies inside
a cone around the candidates (plus a margin for what that rough pass leaves out) are predicted precisely —
topocentric, light-time corrected (``astro.orbits.predict``). A candidate within the match radius of a
precise prediction (and brighter than the magnitude limit) is that body.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .match import angular_separation, nearest
from .orbits import Ephemeris, heliocentric_position, predict

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["ROUGH_MARGIN_ARCSEC", "SsMatch", "bodies_in_cone", "match_minor_planets"]

# What the rough pass leaves out: parallax (<= 8.8"/delta), light time (rate x ~10 min), aberration (~20").
ROUGH_MARGIN_ARCSEC = 120.0


@dataclass
class SsMatch:
    """The bodies predicted near a frame's candidates and, per candidate, the nearest of them."""

    n_orbits: int
    predicted: Ephemeris  # the precise predictions inside the cone (and above the magnitude limit)
    index: np.ndarray  # per candidate: row of `predicted`, -1 if none
    sep_arcsec: np.ndarray  # per candidate: separation to it (inf if none)
    matched: np.ndarray  # per candidate: within the radius
    radius_arcsec: float
    topocentric: bool
    notes: list[str] = field(default_factory=list)

    def body(self, i: int) -> dict:
        """JSON record of the body nearest candidate ``i`` (None if none was predicted)."""
        j = int(self.index[i])
        if j < 0:
            return {}
        p = self.predicted
        return {"designation": str(p.designation[j]), "ra": float(p.ra[j]), "dec": float(p.dec[j]),
                "sep_arcsec": float(self.sep_arcsec[i]), "mag_v": float(p.mag_v[j]),
                "rate_arcsec_per_hour": float(p.rate_arcsec_per_hour[j]),
                "days_from_epoch": float(p.epoch_offset_days[j])}


def _unit(ra, dec) -> np.ndarray:
    ra, dec = np.deg2rad(np.asarray(ra, float)), np.deg2rad(np.asarray(dec, float))
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def bodies_in_cone(orbits: Table, mjd_utc: float, ra: float, dec: float, radius_deg: float) -> np.ndarray:
    """Indices of the orbits whose rough (geocentric, no light time) position at ``mjd_utc`` lies in the cone."""
    import astropy.units as u
    from astropy.coordinates import get_body_barycentric
    from astropy.time import Time

    if len(orbits) == 0:
        return np.zeros(0, int)
    t = Time(mjd_utc, format="mjd", scale="utc")
    earth = (get_body_barycentric("earth", t).xyz - get_body_barycentric("sun", t).xyz).to_value(u.au)
    v = heliocentric_position(orbits, t.tt.jd) - earth
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    return np.flatnonzero(v @ _unit(ra, dec) >= np.cos(np.deg2rad(radius_deg)))


def match_minor_planets(orbits: Table, mjd_utc: float, ra, dec, radius_arcsec: float,
                        site: tuple[float, float, float] | None = None, mag_limit: float | None = None) -> SsMatch:
    """Match candidates at (ra, dec) (deg arrays) observed at UTC MJD ``mjd_utc`` to the bodies of ``orbits``."""
    ra = np.atleast_1d(np.asarray(ra, float))
    dec = np.atleast_1d(np.asarray(dec, float))
    n = len(ra)
    notes = [] if site is not None else ["site unknown: geocentric predictions (parallax up to ~9\"/delta[AU])"]
    empty = predict(orbits[:0], mjd_utc, None)
    if n == 0 or len(orbits) == 0:
        return SsMatch(len(orbits), empty, np.full(n, -1), np.full(n, np.inf), np.zeros(n, bool), radius_arcsec,
                       site is not None, notes)
    centre = _unit(ra, dec).sum(axis=0)
    c_ra = float(np.rad2deg(np.arctan2(centre[1], centre[0])) % 360.0)
    c_dec = float(np.rad2deg(np.arcsin(centre[2] / np.linalg.norm(centre))))
    reach = float(np.max(angular_separation(c_ra, c_dec, ra, dec))) + (radius_arcsec + ROUGH_MARGIN_ARCSEC) / 3600
    near = bodies_in_cone(orbits, mjd_utc, c_ra, c_dec, reach)
    pred = predict(orbits[near], mjd_utc, site)
    if mag_limit is not None:
        keep = pred.mag_v <= mag_limit
        if (~keep).any():
            notes.append(f"{int((~keep).sum())} bod(ies) in the field predicted fainter than V={mag_limit} ignored")
        pred = Ephemeris(*(getattr(pred, f)[keep] for f in Ephemeris.__dataclass_fields__))
    idx, sep = nearest(ra, dec, pred.ra, pred.dec)
    return SsMatch(len(orbits), pred, np.asarray(idx), np.asarray(sep), np.asarray(sep) <= radius_arcsec,
                   radius_arcsec, site is not None, notes)
