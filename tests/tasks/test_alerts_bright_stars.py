"""Bright-star residuals and ghosts are not alerted: a synthetic frame (a TAN WCS at 0.5"/px) with a catalogue whose
truth is known — candidates placed inside and outside the veto radius of stars of several magnitudes, and on the
ghost of a bright star mirrored through the optical axis."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.table import Table
from astropy.wcs import WCS

from openastro_parsl.tasks.transient import AlertsConfig, AlertsTask
from openastro_parsl.tasks.transient.brightstars import bright_star_radius, sky_to_pixel

SCALE = 0.5 / 3600  # deg per pixel
AXIS = (100.0, 100.0)


def _wcs() -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.2]
    w.wcs.crpix = [AXIS[0] + 1, AXIS[1] + 1]  # the optical axis on the tangent point
    w.wcs.cd = [[-SCALE * np.cos(0.3), SCALE * np.sin(0.3)], [SCALE * np.sin(0.3), SCALE * np.cos(0.3)]]  # rotated
    return w


def _frame():
    """Stars (pixel positions, magnitudes) and candidates (pixel positions) with what each candidate is."""
    w = _wcs()
    stars = {1: (150.0, 130.0, 10.0), 2: (40.0, 160.0, 11.5), 3: (160.0, 40.0, 13.0), 4: (20.0, 20.0, 16.0)}
    # veto radii: star 1 (10 mag) 6 x 10**(0.2 x 2) = 15.1"; star 2 (11.5) 7.55"; star 3 (13, fainter than 12): none
    cands = [
        ("halo of star 1 (12\")", 150.0 + 24.0, 130.0, "bright_star"),
        ("beyond star 1 (20\")", 150.0, 130.0 - 40.0, "clear"),
        ("halo of star 2 (5\")", 40.0, 160.0 + 10.0, "bright_star"),
        ("near star 3 (5\"), too faint to veto", 160.0 - 10.0, 40.0, "clear"),
        ("ghost of star 1 (1 px off)", 2 * AXIS[0] - 150.0 + 1.0, 2 * AXIS[1] - 130.0, "bright_star"),
        ("far from everything", 120.0, 180.0, "clear"),
    ]
    sra, sdec = w.wcs_pix2world([s[0] for s in stars.values()], [s[1] for s in stars.values()], 0)
    refcat = Table({"id": list(stars), "ra": sra, "dec": sdec, "r": [s[2] for s in stars.values()],
                    "g": [s[2] + 0.5 for s in stars.values()], "g_err": [0.01] * 4, "r_err": [0.01] * 4})
    x = np.array([c[1] for c in cands])
    y = np.array([c[2] for c in cands])
    ra, dec = w.wcs_pix2world(x, y, 0)
    n = len(cands)
    t = Table({"id": np.arange(n), "ra": ra, "dec": dec, "x": x, "y": y, "flux": [500.0] * n, "flux_err": [10.0] * n,
               "snr": [50.0] * n, "mag": [17.0] * n, "mag_err": [0.02] * n, "rb_score": [0.99] * n,
               "fwhm": [3.0] * n, "flags": [0] * n})
    t.meta.update({"psf_fwhm": 3.0, "pixel_scale_arcsec": 0.5, "mjd_mid": 61130.2, "band": "r"})
    stamp = np.zeros((n, 9, 9))
    cutouts = {"id": np.arange(n), "science": stamp, "reference": stamp, "difference": stamp,
               "sigma": np.ones((n, 9, 9))}
    return t, cutouts, refcat, cands


def test_radius_grows_with_the_square_root_of_the_flux():
    r = bright_star_radius([12.0, 11.0, 7.0, 13.0, np.nan, -5.0], 12.0, 6.0, 300.0)
    assert r[0] == pytest.approx(6.0) and r[1] == pytest.approx(6.0 * 10 ** 0.2)
    assert r[2] == pytest.approx(60.0) and r[3] == 0 and r[4] == 0 and r[5] == 300.0


def test_affine_sky_to_pixel_from_the_candidates_is_exact_for_a_tan_frame():
    t, _, refcat, _ = _frame()
    to_pixel, rms = sky_to_pixel(t["ra"], t["dec"], t["x"], t["y"])
    assert rms < 0.01
    x, y = to_pixel(refcat["ra"], refcat["dec"])
    assert np.allclose(x, [150, 40, 160, 20], atol=0.02) and np.allclose(y, [130, 160, 40, 20], atol=0.02)
    assert sky_to_pixel(t["ra"][:2], t["dec"][:2], t["x"][:2], t["y"][:2]) is None


def test_bright_star_halos_and_ghosts_are_vetoed_and_recorded():
    t, cutouts, refcat, cands = _frame()
    cfg = AlertsConfig(ghost_axis_pix=AXIS, ghost_factors=[-1.0], ghost_mag_limit=10.0)
    s = AlertsTask(cfg).run(t, cutouts, refcat, orbits=[], data_id={"instrument": "slt40", "exposure": 3})["alerts"]
    json.dumps(s)
    expect_clear = sorted(i for i, c in enumerate(cands) if c[3] == "clear")
    assert sorted(a["candidate_id"] for a in s["alerts"]) == expect_clear
    assert s["rejected"]["bright_star"] == 3
    vetoed = {v["candidate_id"]: v["vetting"]["bright_star"] for v in s["near_bright_stars"]}
    assert sorted(vetoed) == [0, 2, 4]
    assert vetoed[0]["decision"] == "bright_star" and vetoed[0]["star"]["id"] == 1
    assert vetoed[0]["star"]["sep_arcsec"] == pytest.approx(12.0, abs=0.01)
    assert vetoed[0]["star"]["radius_arcsec"] == pytest.approx(6.0 * 10 ** 0.4, rel=1e-6)
    off = vetoed[0]["star"]["offset_arcsec"]
    assert np.hypot(off["east"], off["north"]) == pytest.approx(12.0, abs=0.01)
    assert vetoed[2]["star"]["id"] == 2 and vetoed[2]["star"]["sep_arcsec"] == pytest.approx(5.0, abs=0.01)
    ghost = vetoed[4]["ghost"]
    assert ghost["id"] == 1 and ghost["factor"] == -1.0 and ghost["sep_pix"] == pytest.approx(1.0, abs=0.02)
    assert (ghost["x"], ghost["y"]) == (pytest.approx(50.0, abs=0.02), pytest.approx(70.0, abs=0.02))
    for a in s["alerts"]:
        assert a["vetting"]["bright_star"]["decision"] == "clear" and a["bright_star"] is None
        assert a["vetting"]["bright_star"]["n_bright"] == 2
    # without ghost factors the ghost is alerted; without the check everything is
    s2 = AlertsTask().run(t, cutouts, refcat, orbits=[])["alerts"]
    assert sorted(a["candidate_id"] for a in s2["alerts"]) == [1, 3, 4, 5]
    s3 = AlertsTask(AlertsConfig(bright_star_mag_limit=None)).run(t, cutouts, refcat, orbits=[])["alerts"]
    assert len(s3["alerts"]) == 6 and s3["rejected"]["bright_star"] == 0
    assert s3["alerts"][0]["vetting"]["bright_star"]["status"] == "not_configured"
