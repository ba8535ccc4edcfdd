"""Shared science helpers that are not pipeline tasks: the layer every branch of ``openastro_parsl.tasks`` (and
the simulator) builds on.

=====================  ==============================================================================
``astro.wcs``          FITS cards <-> WCS (``wcs_from_cards``, ``wcs_cards``), ``pixel_scale_arcsec``, ``tan_wcs``
``astro.psf``          the Moffat profile integrated over pixels, images of point sources, ``MoffatPSF``
``astro.match``        great-circle separations and nearest-neighbour sky matching (right across RA 0/360)
``astro.ephemeris``    linear ephemeris fits (t = t0 + P E)
``astro.jsonable``     numpy -> JSON-native values for StructuredData outputs
``astro.refcat``       reference catalogues: local files, Gaia DR3 through astroquery, a SQLite cone cache
``astro.cone_cache``   what the archive caches share: sky cones, the SQLite file, when to ask the archive
``astro.observation``  exposure metadata (times, site, detector) from a raw header via the ingest translators
``astro.mpcorb``       MPC orbit files (MPCORB format): read with file:line errors, write
``astro.orbits``       two-body propagation of osculating elements to apparent topocentric positions
``astro.minor_planets`` the minor planets predicted in a frame, and candidates matched to them
=====================  ==============================================================================

The first five are re-exported here, each imported on first use (``astro.wcs`` loads astropy.wcs, half a
second a planner need not pay); the others are imported as modules (they pull in SQLite, the network
client and the header translators, which most users of this package do not need).
Nothing here imports the pipeline framework: these functions work on arrays, tables and WCSs.
"""

from typing import Any

from .._lazy import lazy_exports

__all__ = ["FWHM_SIGMA", "LinearEphemeris", "MoffatPSF", "PixelQuadrature", "angular_separation", "finite_or_none",
           "fit_linear_ephemeris", "jsonable", "moffat_alpha", "moffat_fwhm", "moffat_pixels", "moffat_profile",
           "nearest", "nearest_within", "pixel_scale_arcsec", "quiet_wcs", "render_moffat_stars", "tan_wcs",
           "wcs_cards", "wcs_from_cards"]
_get = lazy_exports(__name__, {
    "ephemeris": ("LinearEphemeris", "fit_linear_ephemeris"),
    "jsonable": ("finite_or_none", "jsonable"),
    "match": ("angular_separation", "nearest", "nearest_within"),
    "psf": ("FWHM_SIGMA", "MoffatPSF", "PixelQuadrature", "moffat_alpha", "moffat_fwhm", "moffat_pixels",
            "moffat_profile", "render_moffat_stars"),
    "wcs": ("pixel_scale_arcsec", "quiet_wcs", "tan_wcs", "wcs_cards", "wcs_from_cards"),
})


def __getattr__(name: str) -> Any:
    return _get(name)
