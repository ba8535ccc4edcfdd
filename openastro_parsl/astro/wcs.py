"""WCS helpers: FITS cards <-> astropy WCS, the pixel scale a WCS implies, a TAN WCS from scratch.

Datasets carry WCSs as plain FITS cards in JSON (``wcsSolution``, ``refGrid``, the survey's ``truth.json``):
``wcs_cards`` writes them (CD matrix, SIP terms when present) and ``wcs_from_cards`` reads them back.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

if TYPE_CHECKING:  # astropy.wcs loads in ~0.5 s: imported where used, so importing a task module stays cheap
    from astropy.io import fits
    from astropy.wcs import WCS

__all__ = ["pixel_scale_arcsec", "quiet_wcs", "tan_wcs", "wcs_cards", "wcs_from_cards"]


def quiet_wcs(header: fits.Header) -> WCS:
    """``WCS(header, naxis=2)`` without astropy's FITSFixedWarning chatter (e.g. about DATE-OBS -> MJD-OBS)."""
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header, naxis=2)


def wcs_from_cards(cards: Mapping[str, Any]) -> WCS:
    """The celestial WCS of a dict of FITS cards (as ``wcs_cards`` writes them, SIP terms included).

    Cards whose value is None are left out (JSON has no way to say "absent" otherwise); cards that do not
    describe a celestial WCS raise ``ValueError`` naming the keys, rather than giving a WCS that maps pixels to
    nothing.
    """
    from astropy.io import fits

    w = quiet_wcs(fits.Header({k: v for k, v in cards.items() if v is not None}))
    if not w.has_celestial:
        raise ValueError(f"WCS cards do not describe a celestial WCS: {sorted(cards)}")
    return w


def wcs_cards(wcs: WCS) -> dict[str, Any]:
    """FITS cards of a celestial WCS (CD form, SIP terms when present) as a JSON-able dict."""
    w = wcs.celestial
    cd = w.pixel_scale_matrix
    sip = wcs.sip is not None
    cards: dict[str, Any] = {
        "WCSAXES": 2,
        "CTYPE1": "RA---TAN-SIP" if sip else "RA---TAN",
        "CTYPE2": "DEC--TAN-SIP" if sip else "DEC--TAN",
        "CUNIT1": "deg", "CUNIT2": "deg",
        "CRVAL1": float(w.wcs.crval[0]), "CRVAL2": float(w.wcs.crval[1]),
        "CRPIX1": float(w.wcs.crpix[0]), "CRPIX2": float(w.wcs.crpix[1]),
        "CD1_1": float(cd[0, 0]), "CD1_2": float(cd[0, 1]), "CD2_1": float(cd[1, 0]), "CD2_2": float(cd[1, 1]),
        "RADESYS": str(w.wcs.radesys or "ICRS"),
    }
    if w.wcs.radesys in ("FK5", "FK4") and np.isfinite(w.wcs.equinox):
        cards["EQUINOX"] = float(w.wcs.equinox)
    if sip:
        for name, coeffs in (("A", wcs.sip.a), ("B", wcs.sip.b), ("AP", wcs.sip.ap), ("BP", wcs.sip.bp)):
            if coeffs is None:
                continue
            order = coeffs.shape[0] - 1
            cards[f"{name}_ORDER"] = int(order)
            for i in range(order + 1):
                for j in range(order + 1 - i):
                    if coeffs[i, j] != 0.0:
                        cards[f"{name}_{i}_{j}"] = float(coeffs[i, j])
    return cards


def pixel_scale_arcsec(wcs: WCS) -> float:
    """Mean pixel scale (arcsec/px) of a WCS at its reference point: the side of the square pixel of equal area.

    The square root of astropy's ``proj_plane_pixel_area``, i.e. of |det CD|. Not the geometric mean of
    ``proj_plane_pixel_scales`` (the lengths of the CD columns): for a skewed fitted WCS those overstate the
    area a pixel covers, and the area is what flux per pixel and FWHM-in-pixels conversions need. For an
    orthogonal CD matrix the two agree.
    """
    from astropy.wcs.utils import proj_plane_pixel_area

    return float(np.sqrt(proj_plane_pixel_area(wcs.celestial)) * 3600.0)


def tan_wcs(ra0: float, dec0: float, scale_arcsec: float, rot_deg: float, flip: bool, shape: tuple[int, int],
            crpix_offset: tuple[float, float] = (0.0, 0.0)) -> WCS:
    """A gnomonic (TAN) WCS centred on (ra0, dec0) for an image of ``shape`` (ny, nx): square pixels of
    ``scale_arcsec``, rotated by ``rot_deg`` (east of north), x mirrored when ``flip``; the reference pixel at
    the image centre plus ``crpix_offset`` (pixels)."""
    from astropy.wcs import WCS

    ny, nx = shape
    s = scale_arcsec / 3600.0
    t = math.radians(rot_deg)
    cd = s * np.array([[-math.cos(t), math.sin(t)], [math.sin(t), math.cos(t)]])
    if flip:
        cd[:, 0] *= -1.0
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra0, dec0]
    w.wcs.crpix = [(nx + 1) / 2.0 + crpix_offset[0], (ny + 1) / 2.0 + crpix_offset[1]]
    w.wcs.cd = cd
    w.wcs.radesys = "ICRS"
    return w
