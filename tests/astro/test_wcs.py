"""astro.wcs: FITS cards <-> WCS, pixel scale, TAN WCS from scratch."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.wcs import WCS

from openastro_parsl.astro.wcs import pixel_scale_arcsec, quiet_wcs, tan_wcs, wcs_cards, wcs_from_cards


def test_tan_wcs_geometry():
    w = tan_wcs(150.0, 2.0, 0.5, 0.0, False, (101, 201))
    assert w.wcs.crpix[0] == pytest.approx(101.0) and w.wcs.crpix[1] == pytest.approx(51.0)
    ra, dec = w.wcs_pix2world([100.0, 110.0, 100.0], [50.0, 50.0, 60.0], 0)
    assert ra[0] == pytest.approx(150.0) and dec[0] == pytest.approx(2.0)
    assert ra[1] < ra[0] and dec[2] > dec[0]  # north up, east left
    assert (dec[2] - dec[0]) * 3600 == pytest.approx(5.0, rel=1e-6)
    flipped = tan_wcs(150.0, 2.0, 0.5, 0.0, True, (101, 201))
    assert flipped.wcs_pix2world([110.0], [50.0], 0)[0][0] > 150.0
    rotated = tan_wcs(150.0, 2.0, 0.5, 90.0, False, (101, 201))
    assert pixel_scale_arcsec(rotated) == pytest.approx(0.5, rel=1e-12)


def test_cards_round_trip_through_json_with_sip():
    w = tan_wcs(10.0, -30.0, 1.2, 33.0, False, (64, 64))
    header = w.to_header()
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN-SIP", "DEC--TAN-SIP"
    header["A_ORDER"], header["B_ORDER"] = 2, 2
    header["A_2_0"], header["B_0_2"] = 1e-5, -2e-5
    sip = quiet_wcs(header)
    cards = json.loads(json.dumps(wcs_cards(sip)))
    assert cards["A_2_0"] == pytest.approx(1e-5) and cards["CTYPE1"] == "RA---TAN-SIP"
    back = wcs_from_cards(cards)
    x, y = np.meshgrid(np.linspace(0, 63, 5), np.linspace(0, 63, 5))
    a = np.array(sip.all_pix2world(x.ravel(), y.ravel(), 0))
    b = np.array(back.all_pix2world(x.ravel(), y.ravel(), 0))
    assert np.abs(a - b).max() * 3600 < 1e-9


def test_cards_none_values_are_left_out_and_non_celestial_refused():
    cards = {k: v for k, v in wcs_cards(tan_wcs(1.0, 2.0, 1.0, 0.0, False, (10, 10))).items()}
    cards["EQUINOX"] = None
    assert wcs_from_cards(cards).has_celestial
    with pytest.raises(ValueError, match="celestial"):
        wcs_from_cards({"CTYPE1": "LINEAR", "CTYPE2": "LINEAR", "CDELT1": 1.0, "CDELT2": 1.0})


def test_pixel_scale_is_the_side_of_the_equal_area_square():
    """A skewed CD matrix: sqrt(|det CD|), not the geometric mean of the column lengths."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [0.0, 0.0]
    s = 1.0 / 3600
    w.wcs.cd = [[-s, 0.3 * s], [0.0, s]]
    assert pixel_scale_arcsec(w) == pytest.approx(1.0, rel=1e-12)
    from astropy.wcs.utils import proj_plane_pixel_scales

    assert np.sqrt(np.prod(proj_plane_pixel_scales(w))) * 3600 == pytest.approx(1.09 ** 0.25, rel=1e-12)
