"""Times of light curves and transit tables from files, onto the pipeline's one clock: BJD_TDB as a Julian date.

Files give times in many systems. Each is a name for ``--time-system`` (``--time-offset`` is added first, for
truncated dates such as HJD - 2450000):

======== ===================================================== ===================================
system   meaning                                               to BJD_TDB
======== ===================================================== ===================================
BJD_TDB  barycentric Julian date, TDB                           as is
BTJD     TESS: BJD_TDB - 2457000                                + 2457000
BKJD     Kepler/K2: BJD_TDB - 2454833                           + 2454833
BJD_UTC  barycentric Julian date on UTC (some pre-2010 papers)  + TT-UTC (+ TDB-TT), ~65-69 s
JD       geocentric (or topocentric) Julian date, UTC           + TDB-UTC + barycentric light time
MJD      modified Julian date, UTC (JD - 2400000.5)             as JD
HJD      heliocentric Julian date, UTC (ETD, AAVSO, most        heliocentric light time taken off,
         ground-based papers)                                   then as JD
======== ===================================================== ===================================

The UTC systems need the target's coordinates and where the observer stood (a site, else the geocentre).
Accuracy: astropy's barycentric correction with its built-in ephemeris is good to a few microseconds; the
geocentre instead of the unknown site errs by at most 21 ms (Earth's radius / c). HJD is taken as HJD_UTC,
as ETD and the AAVSO write it; a file whose HJD is on TT (rare) comes out 69 s late (TT - UTC in 2020s).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..timescales import bjd_tdb

OFFSETS = {"BJD_TDB": 0.0, "BTJD": 2457000.0, "BKJD": 2454833.0}
UTC_SYSTEMS = ("JD", "MJD", "HJD")
BARYCENTRIC_UTC = "BJD_UTC"
ALIASES = {"BJD": "BJD_TDB", "JD_UTC": "JD", "MJD_UTC": "MJD", "HJD_UTC": "HJD", "TJD": "BTJD"}
SYSTEMS = (*OFFSETS, BARYCENTRIC_UTC, *UTC_SYSTEMS)
MJD_ZERO = 2400000.5


class TimeSystemError(ValueError):
    """A time system name is unknown, or a UTC system lacks the coordinates it needs."""


@dataclass(frozen=True)
class Site:
    """Where the observer stood; ``None`` fields mean the geocentre."""

    lat: float = 0.0
    lon: float = 0.0
    elev: float = -6378137.0  # at lat 0, lon 0, minus the WGS84 equatorial radius is the geocentre itself
    name: str = "geocentre"

    @classmethod
    def parse(cls, text: str | None) -> Site:
        """``LAT,LON[,ELEV_M]`` in degrees and metres, or ``geocentre`` / empty."""
        if not text or text.strip().lower() in ("geocentre", "geocenter", "earth"):
            return cls()
        parts = [p.strip() for p in text.split(",")]
        try:
            nums = [float(p) for p in parts]
        except ValueError:
            raise TimeSystemError(f"--site {text!r}: expected LAT,LON[,ELEV_M] in degrees and metres, "
                                  "or 'geocentre'") from None
        if len(nums) not in (2, 3) or not -90 <= nums[0] <= 90:
            raise TimeSystemError(f"--site {text!r}: expected LAT,LON[,ELEV_M] with -90 <= LAT <= 90")
        return cls(nums[0], nums[1], nums[2] if len(nums) == 3 else 0.0, f"{nums[0]:+.4f},{nums[1]:+.4f}")


def normalise_system(name: str) -> str:
    """The canonical name of a time system (``bjd`` -> ``BJD_TDB``); unknown names are refused."""
    key = name.strip().upper().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in SYSTEMS:
        raise TimeSystemError(f"--time-system {name!r} is not one of {', '.join(SYSTEMS)}")
    return key


def needs_coordinates(system: str) -> bool:
    return normalise_system(system) in UTC_SYSTEMS


def to_bjd_tdb(values, system: str, *, offset: float = 0.0, ra: float | None = None, dec: float | None = None,
               site: Site | None = None) -> np.ndarray:
    """Times ``values + offset`` in ``system`` as BJD_TDB Julian dates (see the module docstring)."""
    system = normalise_system(system)
    t = np.asarray(values, dtype=float) + float(offset)
    if system in OFFSETS:
        return t + OFFSETS[system]
    if system == BARYCENTRIC_UTC:  # already at the barycentre: only the clock changes (Eastman et al. 2010)
        from astropy.time import Time

        return np.asarray(Time(t, format="jd", scale="utc").tdb.jd, dtype=float)
    if ra is None or dec is None:
        raise TimeSystemError(f"times in {system} (UTC) need the target's coordinates to become BJD_TDB")
    site = site or Site()
    if system == "HJD":
        jd = t - heliocentric_delay(t, ra, dec, site)  # off by up to ~0.05 s: the delay drifts ~9 s a day
        t = t - heliocentric_delay(jd, ra, dec, site)  # one more step: microseconds
    mjd = t - MJD_ZERO if system in ("JD", "HJD") else t
    return bjd_tdb(mjd, site.lat, site.lon, site.elev, ra, dec)


def heliocentric_delay(jd_utc, ra: float, dec: float, site: Site) -> np.ndarray:
    """Days to add to a UTC Julian date to get its HJD (the light time from the observer to the Sun's centre
    along the target's direction)."""
    import astropy.units as u
    from astropy.coordinates import EarthLocation, SkyCoord
    from astropy.time import Time

    loc = EarthLocation.from_geodetic(site.lon * u.deg, site.lat * u.deg, site.elev * u.m)
    tt = Time(np.atleast_1d(np.asarray(jd_utc, float)), format="jd", scale="utc", location=loc)
    delay = tt.light_travel_time(SkyCoord(ra * u.deg, dec * u.deg, frame="icrs"), kind="heliocentric")
    return np.asarray(delay.to_value(u.day), dtype=float)
