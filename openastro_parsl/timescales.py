"""Barycentric time, shared by the simulator (which renders variability on the barycentric clock, as the sky
does) and the light-curve task (which puts every observation on that clock)."""

from __future__ import annotations

import numpy as np


def bjd_tdb(mjd_utc, lat_deg, lon_deg, elev_m, ra_deg: float, dec_deg: float) -> np.ndarray:
    """Barycentric Julian date (TDB) of UTC MJDs observed from sites (arrays broadcast) towards (ra, dec)."""
    import astropy.units as u
    from astropy.coordinates import EarthLocation, SkyCoord
    from astropy.time import Time

    mjd_utc = np.atleast_1d(np.asarray(mjd_utc, dtype=float))
    lat, lon, elev = (np.broadcast_to(np.asarray(v, dtype=float), mjd_utc.shape) for v in (lat_deg, lon_deg, elev_m))
    loc = EarthLocation.from_geodetic(lon * u.deg, lat * u.deg, elev * u.m)
    t = Time(mjd_utc, format="mjd", scale="utc", location=loc)
    target = SkyCoord(ra_deg * u.deg, dec_deg * u.deg, frame="icrs")
    bjd = t.tdb + t.light_travel_time(target, kind="barycentric")
    return np.asarray(bjd.jd, dtype=float)
