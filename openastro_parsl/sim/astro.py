"""Observer geometry: sidereal time, Sun position, altitude and airmass, time strings.

Self-contained low-precision formulae (Astronomical Almanac, ~0.01 deg) so that the
simulator never triggers astropy IERS / leap-second downloads and stays bit-for-bit
deterministic.  Precision is far better than what scheduling and airmass need.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import numpy as np

MJD_EPOCH = _dt.datetime(1858, 11, 17)
J2000_MJD = 51544.5


@dataclass(frozen=True)
class Site:
    """An observatory; longitude east-positive, degrees."""

    name: str
    code: str
    lon: float
    lat: float
    height_m: float
    seeing_arcsec: float  # median zenith atmospheric seeing (FWHM)


def gmst_deg(mjd):
    """Greenwich mean sidereal time in degrees (UT1 ~ UTC is plenty here)."""
    d = np.asarray(mjd, dtype=float) - J2000_MJD
    return np.mod(280.46061837 + 360.98564736629 * d, 360.0)


def sun_radec(mjd):
    """Apparent Sun RA/Dec (deg), low-precision series."""
    n = np.asarray(mjd, dtype=float) - J2000_MJD
    L = np.deg2rad(280.460 + 0.9856474 * n)
    g = np.deg2rad(357.528 + 0.9856003 * n)
    lam = L + np.deg2rad(1.915) * np.sin(g) + np.deg2rad(0.020) * np.sin(2 * g)
    eps = np.deg2rad(23.439 - 4.0e-7 * n)
    ra = np.arctan2(np.cos(eps) * np.sin(lam), np.cos(lam))
    dec = np.arcsin(np.sin(eps) * np.sin(lam))
    return np.mod(np.rad2deg(ra), 360.0), np.rad2deg(dec)


def altitude_deg(ra, dec, mjd, site: Site):
    """Geometric altitude (deg) of (ra, dec) seen from `site` at `mjd`."""
    ha = np.deg2rad(gmst_deg(mjd) + site.lon - np.asarray(ra, dtype=float))
    phi, dlt = np.deg2rad(site.lat), np.deg2rad(np.asarray(dec, dtype=float))
    s = np.sin(phi) * np.sin(dlt) + np.cos(phi) * np.cos(dlt) * np.cos(ha)
    return np.rad2deg(np.arcsin(np.clip(s, -1.0, 1.0)))


def sun_altitude_deg(mjd, site: Site):
    ra, dec = sun_radec(mjd)
    return altitude_deg(ra, dec, mjd, site)


def airmass(alt_deg):
    """Pickering (2002) airmass: finite and accurate down to the horizon."""
    h = np.maximum(np.asarray(alt_deg, dtype=float), 1.0)
    return 1.0 / np.sin(np.deg2rad(h + 244.0 / (165.0 + 47.0 * h**1.1)))


def moon_illumination(mjd):
    """Fraction of the Moon lit (0 new .. 1 full) from the mean synodic month.

    Only used to modulate the sky brightness night to night.
    """
    synodic = 29.530588853
    new_moon_ref = 51550.26  # 2000-01-06 18:14 UTC
    phase = np.mod((np.asarray(mjd, dtype=float) - new_moon_ref) / synodic, 1.0)
    return 0.5 * (1.0 - np.cos(2 * np.pi * phase))


def mjd_to_datetime(mjd: float) -> _dt.datetime:
    """MJD (UTC) -> naive datetime, rounded to the microsecond."""
    return MJD_EPOCH + _dt.timedelta(microseconds=round(mjd * 86400e6))


def datetime_to_mjd(t: _dt.datetime) -> float:
    return (t - MJD_EPOCH) / _dt.timedelta(days=1)


def iso_utc(mjd: float, decimals: int = 3) -> str:
    """ISO-8601 string (no zone suffix, UTC) with `decimals` fractional seconds."""
    t = mjd_to_datetime(mjd)
    base = t.strftime("%Y-%m-%dT%H:%M:%S")
    if decimals == 0:
        return base
    frac = f"{t.microsecond / 1e6:.{decimals}f}"[1:]
    return base + frac


def sexagesimal_ra(ra_deg: float) -> str:
    """'HH MM SS.ss' (MaxIm DL OBJCTRA style)."""
    cs = round(ra_deg / 15.0 * 3600 * 100)  # centiseconds of time
    h, rem = divmod(cs, 3600 * 100)
    m, s = divmod(rem, 60 * 100)
    return f"{h % 24:02d} {m:02d} {s // 100:02d}.{s % 100:02d}"


def sexagesimal_dec(dec_deg: float) -> str:
    """'+DD MM SS.s' (MaxIm DL OBJCTDEC style)."""
    sign = "-" if dec_deg < 0 else "+"
    ds = round(abs(dec_deg) * 3600 * 10)  # deci-arcseconds
    d, rem = divmod(ds, 3600 * 10)
    m, s = divmod(rem, 60 * 10)
    return f"{sign}{d:02d} {m:02d} {s // 10:02d}.{s % 10:d}"
