"""astro.match: separations and nearest neighbours on the sphere, right across RA 0/360 and at the poles."""

from __future__ import annotations

import numpy as np
import pytest

from openastro_parsl.astro.match import angular_separation, nearest, nearest_within


def test_angular_separation():
    assert angular_separation(10.0, 20.0, 10.0, 21.0) == pytest.approx(1.0, abs=1e-12)
    assert angular_separation(359.999, 0.0, 0.001, 0.0) * 3600 == pytest.approx(7.2, rel=1e-9)
    assert angular_separation(0.0, 89.9, 180.0, 89.9) == pytest.approx(0.2, rel=1e-9)  # over the pole
    assert angular_separation(0.0, 0.0, 180.0, 0.0) == pytest.approx(180.0)
    d = angular_separation(10.0, 0.0, np.array([10.0, 11.0, 12.0]), 0.0)
    assert d.shape == (3,) and np.allclose(d, [0.0, 1.0, 2.0])


def test_nearest_across_ra_zero():
    idx, sep = nearest([359.999, 180.0], [-10.0, 45.0], [0.001, 5.0, 180.0], [-10.0, -10.0, 45.0001])
    assert list(idx) == [0, 2]
    assert sep[0] == pytest.approx(7.2 * np.cos(np.radians(10.0)), rel=1e-6)
    assert sep[1] == pytest.approx(0.36, rel=1e-6)
    idx, sep = nearest([1.0, 2.0], [0.0, 0.0], [], [])
    assert list(idx) == [-1, -1] and np.all(np.isinf(sep))


def test_nearest_within():
    ra = np.array([0.001, 0.0015, 300.0, np.nan])
    dec = np.array([30.0, 30.0, 30.0, np.nan])
    assert nearest_within(ra, dec, 359.999, 30.0, radius_arcsec=7.0) == 0   # 6.2" across RA 0
    assert nearest_within(ra, dec, 359.999, 30.0, radius_arcsec=6.0) is None
    assert nearest_within(ra[3:], dec[3:], 359.999, 30.0, radius_arcsec=6.0) is None  # only NaNs
    assert nearest_within([], [], 1.0, 1.0, radius_arcsec=1.0) is None
