"""Where known minor planets are at a given time: two-body (Keplerian) propagation of osculating elements.

Elements (``astro.mpcorb`` table: heliocentric, J2000 ecliptic, epoch in TT) are propagated by the mean motion
the file gives, rotated to the equator (J2000 obliquity 84381.448"), and seen from the observer: the Earth's
heliocentric position from astropy's built-in ephemeris (``get_body_barycentric``), plus the site's geocentric
position when the site is known (topocentric parallax: up to ~6" for a main-belt body), with one light-time
iteration. The result is an astrometric ICRS position, comparable with catalogue positions and plate solutions.

Accuracy: planetary perturbations are ignored. For main-belt objects within a few months of the elements'
epoch the error is arcseconds to a few tens of arcseconds (docs/vetting.md gives the measured figure for
Ceres against JPL Horizons); near-Earth objects and long extrapolations are worse, so vetting's match radius
must cover it and MPC's monthly elements (epochs every 200 days) should be refreshed as the refcat is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["Ephemeris", "GAUSS_K", "OBLIQUITY_J2000_DEG", "astrometric_radec", "ecliptic_to_equatorial",
           "heliocentric_position", "hg_magnitude", "observer_positions", "predict", "solve_kepler"]

GAUSS_K = 0.01720209895  # AU^1.5 / day (solar masses), as MPC uses for n <-> a
OBLIQUITY_J2000_DEG = 84381.448 / 3600.0
C_AU_PER_DAY = 173.1446326846693


@dataclass
class Ephemeris:
    """Predicted astrometric positions of the bodies of an orbit table at one time (arrays, one per body)."""

    designation: np.ndarray
    ra: np.ndarray  # deg ICRS
    dec: np.ndarray
    delta_au: np.ndarray  # observer distance
    r_au: np.ndarray  # heliocentric distance
    mag_v: np.ndarray  # H-G predicted V
    rate_arcsec_per_hour: np.ndarray  # apparent sky motion
    epoch_offset_days: np.ndarray  # time from the elements' epoch (the error grows with it)


def solve_kepler(M: np.ndarray, e: np.ndarray, tol: float = 1e-13) -> np.ndarray:
    """Eccentric anomaly E (rad) with E - e sin E = M, by Newton's method (elliptic orbits, vectorised)."""
    M = np.mod(np.asarray(M, float) + np.pi, 2 * np.pi) - np.pi
    e = np.asarray(e, float)
    E = np.where(e < 0.8, M, np.pi * np.sign(M))
    for _ in range(50):
        dE = (E - e * np.sin(E) - M) / (1.0 - e * np.cos(E))
        E = E - dE
        if np.all(np.abs(dE) < tol):
            break
    return E


def ecliptic_to_equatorial(xyz: np.ndarray) -> np.ndarray:
    """Rotate J2000 ecliptic vectors (..., 3) to the J2000 equator (ICRS to far better than the 2-body error)."""
    eps = np.deg2rad(OBLIQUITY_J2000_DEG)
    c, s = np.cos(eps), np.sin(eps)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    return np.stack([x, c * y - s * z, s * y + c * z], axis=-1)


def heliocentric_position(orbits: Table, jd_tt) -> np.ndarray:
    """Heliocentric equatorial J2000 positions (AU), shape (n_bodies, 3), at TT Julian date(s) ``jd_tt``
    (a scalar, or one per body)."""
    a = np.asarray(orbits["a"], float)
    e = np.asarray(orbits["e"], float)
    inc, node, peri = (np.deg2rad(np.asarray(orbits[c], float)) for c in ("incl", "node", "peri"))
    dt = np.asarray(jd_tt, float) - (np.asarray(orbits["epoch_mjd"], float) + 2400000.5)
    M = np.deg2rad(np.asarray(orbits["M"], float) + np.asarray(orbits["n"], float) * dt)
    E = solve_kepler(M, e)
    xp = a * (np.cos(E) - e)  # in the orbital plane, x towards perihelion
    yp = a * np.sqrt(1.0 - e * e) * np.sin(E)
    cw, sw, cO, sO, ci, si = np.cos(peri), np.sin(peri), np.cos(node), np.sin(node), np.cos(inc), np.sin(inc)
    x = (cO * cw - sO * sw * ci) * xp + (-cO * sw - sO * cw * ci) * yp
    y = (sO * cw + cO * sw * ci) * xp + (-sO * sw + cO * cw * ci) * yp
    z = (sw * si) * xp + (cw * si) * yp
    return ecliptic_to_equatorial(np.stack([x, y, z], axis=-1))


def observer_positions(mjd_utc, lon=None, lat=None, height=None) -> tuple[np.ndarray, np.ndarray]:
    """(TT JDs, heliocentric ICRS observer positions (n, 3) in AU) at UTC MJDs (an array): the geocentre, or the
    sites (lon, lat in deg, height in m; arrays broadcast against the times) when given. One astropy call."""
    import astropy.units as u
    from astropy.coordinates import EarthLocation, get_body_barycentric
    from astropy.time import Time

    t = Time(np.atleast_1d(np.asarray(mjd_utc, float)), format="mjd", scale="utc")
    pos = (get_body_barycentric("earth", t).xyz - get_body_barycentric("sun", t).xyz).to_value(u.au).T
    if lon is not None and lat is not None:
        shape = t.shape
        lon, lat, height = (np.broadcast_to(np.asarray(v if v is not None else 0.0, float), shape)
                            for v in (lon, lat, height))
        loc = EarthLocation.from_geodetic(lon * u.deg, lat * u.deg, height * u.m)
        gcrs, _ = loc.get_gcrs_posvel(t)
        pos = pos + gcrs.xyz.to_value(u.au).T
    return np.asarray(t.tt.jd, float), pos


def _observer(mjd_utc: float, site: tuple[float, float, float] | None):
    """(TT JD, heliocentric observer position (AU), ICRS) at a UTC MJD; the geocentre when ``site`` is None."""
    jd, pos = observer_positions([mjd_utc], *(site if site is not None else (None, None, None)))
    return float(jd[0]), pos[0]


def astrometric_radec(orbits: Table, jd_tt, observer: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ra, dec, delta) seen from ``observer`` (heliocentric ICRS AU, (3,) or one row per time/body) at TT JD(s)
    ``jd_tt``, light-time corrected once: the body where it was when the light left it."""
    topo = heliocentric_position(orbits, jd_tt) - observer
    tau = np.linalg.norm(topo, axis=-1) / C_AU_PER_DAY
    topo = heliocentric_position(orbits, np.asarray(jd_tt, float) - tau) - observer
    ra, dec = _radec(topo)
    return ra, dec, np.linalg.norm(topo, axis=-1)


def hg_magnitude(H, G, r_au, delta_au, phase_rad) -> np.ndarray:
    """Predicted V from the IAU H-G system (Bowell et al. 1989)."""
    tan_half = np.tan(np.asarray(phase_rad, float) / 2.0)
    phi1 = np.exp(-3.33 * tan_half**0.63)
    phi2 = np.exp(-1.87 * tan_half**1.22)
    G = np.asarray(G, float)
    return (np.asarray(H, float) + 5.0 * np.log10(r_au * delta_au)
            - 2.5 * np.log10(np.maximum((1.0 - G) * phi1 + G * phi2, 1e-12)))


def _radec(vec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.linalg.norm(vec, axis=-1)
    return np.mod(np.rad2deg(np.arctan2(vec[..., 1], vec[..., 0])), 360.0), np.rad2deg(np.arcsin(vec[..., 2] / d))


def predict(orbits: Table, mjd_utc: float, site: tuple[float, float, float] | None = None,
            light_time: bool = True) -> Ephemeris:
    """Astrometric positions of every body of ``orbits`` seen at UTC MJD ``mjd_utc`` from ``site`` (lon, lat deg,
    height m; None: the geocentre), light-time corrected once."""
    jd, obs = _observer(mjd_utc, site)
    helio = heliocentric_position(orbits, jd)
    topo = helio - obs
    if light_time and len(orbits):
        tau = np.linalg.norm(topo, axis=-1) / C_AU_PER_DAY
        helio = heliocentric_position(orbits, jd - tau)
        topo = helio - obs
    ra, dec = _radec(topo)
    delta = np.linalg.norm(topo, axis=-1)
    r = np.linalg.norm(helio, axis=-1)
    cos_phase = np.clip(np.sum(helio * topo, axis=-1) / np.maximum(r * delta, 1e-12), -1.0, 1.0)
    # apparent rate: the same propagation an hour later (the observer's own motion included)
    if len(orbits):
        jd2, obs2 = _observer(mjd_utc + 1.0 / 24.0, site)
        ra2, dec2 = _radec(heliocentric_position(orbits, jd2 - delta / C_AU_PER_DAY) - obs2)
        from .match import angular_separation

        rate = angular_separation(ra, dec, ra2, dec2) * 3600.0
    else:
        rate = np.zeros(0)
    return Ephemeris(
        designation=np.asarray(orbits["designation"]).astype(str), ra=ra, dec=dec, delta_au=delta, r_au=r,
        mag_v=hg_magnitude(orbits["H"], orbits["G"], r, delta, np.arccos(cos_phase)),
        rate_arcsec_per_hour=np.asarray(rate, float),
        epoch_offset_days=jd - (np.asarray(orbits["epoch_mjd"], float) + 2400000.5))
