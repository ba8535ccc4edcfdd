"""Positions on the sky: great-circle separations and nearest-neighbour matching to a catalogue.

Everything is in degrees of ICRS (ra, dec) and goes through astropy's spherical geometry, so matches are
right across RA = 0/360 deg and near the poles, where a flat-sky approximation (delta RA x cos dec) is not:
a star at RA 359.9999 and a source at RA 0.0001 are 0.72" apart, not 360 degrees.
(Matching detections to catalogue stars *on the detector*, through a WCS, is done in pixels by the
astrometry and photometry branches, with KD-trees.)
"""

from __future__ import annotations

import numpy as np

__all__ = ["angular_separation", "nearest", "nearest_within"]


def angular_separation(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle distance in degrees between (ra1, dec1) and (ra2, dec2), all in degrees (broadcasting).

    astropy's ``angular_separation`` (Vincenty's formula: exact at the poles, at the antipodes and across RA 0).
    """
    from astropy.coordinates import angular_separation as _vincenty

    ra1, dec1, ra2, dec2 = (np.deg2rad(np.asarray(a, dtype=float)) for a in (ra1, dec1, ra2, dec2))
    return np.rad2deg(_vincenty(ra1, dec1, ra2, dec2))


def nearest(ra, dec, cat_ra, cat_dec) -> tuple[np.ndarray, np.ndarray]:
    """For each position, the index of the nearest catalogue entry and the separation to it (arcsec).

    astropy's ``SkyCoord.match_to_catalog_sky`` (a KD-tree on the unit sphere). With an empty catalogue (or no
    positions) every index is -1 and every separation infinite.
    """
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    ra = np.atleast_1d(np.asarray(ra, dtype=float))
    dec = np.atleast_1d(np.asarray(dec, dtype=float))
    if len(cat_ra) == 0 or len(ra) == 0:
        return np.full(len(ra), -1), np.full(len(ra), np.inf)
    c = SkyCoord(ra * u.deg, dec * u.deg)
    cat = SkyCoord(np.asarray(cat_ra, float) * u.deg, np.asarray(cat_dec, float) * u.deg)
    idx, sep, _ = c.match_to_catalog_sky(cat)
    return np.asarray(idx), sep.arcsec


def nearest_within(cat_ra, cat_dec, ra: float, dec: float, radius_arcsec: float) -> int | None:
    """Index of the catalogue entry nearest to one position (ra, dec) if it lies within ``radius_arcsec``,
    else None. Entries with non-finite coordinates are ignored."""
    cat_ra = np.asarray(cat_ra, dtype=float)
    if len(cat_ra) == 0:
        return None
    d = angular_separation(ra, dec, cat_ra, np.asarray(cat_dec, dtype=float)) * 3600.0
    if not np.isfinite(d).any():
        return None
    i = int(np.nanargmin(d))
    return i if d[i] <= radius_arcsec else None
