"""The survey's optional standard-field night: what a standard field must be to measure colour terms (isolated stars,
a wide colour spread, small catalogue errors, every camera in both bands), and the science part of the survey left
byte for byte as it is without it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.table import Table

from openastro_parsl.sim import sky
from openastro_parsl.sim.schedule import STANDARD_DITHERS_ARCSEC
from openastro_parsl.sim.survey import generate_survey


@pytest.fixture(scope="module")
def standard_survey(tmp_path_factory):
    m = generate_survey(tmp_path_factory.mktemp("std") / "s", seed=42, size="small", standard_field=True)
    return m, json.loads(m.truth.read_text())


def test_science_frames_catalogue_and_truth_are_unchanged(survey, truth, standard_survey):
    m, t = standard_survey
    science = {p.name: p for p in survey.raw_files}
    with_std = {p.name: p for p in m.raw_files}
    assert set(science) < set(with_std)
    assert all(science[k].read_bytes() == with_std[k].read_bytes() for k in science)
    exposures = {e["file"]: e for e in t["exposures"]}
    assert all(exposures[e["file"]] == e for e in truth["exposures"])
    assert [s for s in t["stars"] if s["field"] != sky.STANDARD_FIELD.name] == truth["stars"]
    plain = survey.refcat.read_text().splitlines()
    assert m.refcat.read_text().splitlines()[:len(plain)] == plain


def test_every_camera_observes_the_standard_field_in_both_bands(standard_survey):
    m, t = standard_survey
    std = [e for e in t["exposures"] if e["purpose"] == "standard"]
    assert {f["name"] for f in t["fields"] if f.get("standard")} == {"std1"}
    assert all(e["field"] == "std1" and e["has_wcs"] for e in std)
    per = {(e["instrument"], e["band"]): 0 for e in std}
    for e in std:
        per[(e["instrument"], e["band"])] += 1
    assert per == {(i, b): len(STANDARD_DITHERS_ARCSEC) for i in t["instruments"] for b in ("g", "r")}
    assert min(e["n_refcat_stars"] for e in std) >= 10
    last_science = max(e["mjd"] for e in t["exposures"] if e["purpose"] != "standard")
    assert min(e["mjd"] for e in std) > last_science  # the night after the season: science ids do not move
    assert m.n_exposures == len(t["exposures"])


def test_standard_stars_are_isolated_well_measured_and_wide_in_colour(standard_survey):
    m, t = standard_survey
    stars = [s for s in t["stars"] if s["field"] == "std1"]
    ra = np.array([s["ra"] for s in stars])
    dec = np.array([s["dec"] for s in stars])
    xi, eta = sky.radec_to_tangent(sky.STANDARD_FIELD.ra, sky.STANDARD_FIELD.dec, ra, dec)
    d = np.hypot(xi[:, None] - xi, eta[:, None] - eta) + np.eye(len(xi)) * 1e9
    assert d.min() >= sky.STANDARD_ISOLATION_ARCSEC - 1e-6
    colour = np.array([s["g"] - s["r"] for s in stars])
    assert colour.min() < 0.1 and colour.max() > 1.5 and np.std(colour) > 0.45
    cat = Table.read(m.refcat, format="ascii.ecsv")
    ids = {s["id"] for s in stars}
    rows = cat[np.isin(cat["id"], sorted(ids))]
    assert len(rows) == len(stars)
    assert rows["r_err"].max() <= sky.STANDARD_MAG_ERR[1] and rows["r_err"].min() >= sky.STANDARD_MAG_ERR[0]
    truth_r = {s["id"]: s["r"] for s in stars}
    pull = (rows["r"] - np.array([truth_r[int(i)] for i in rows["id"]])) / rows["r_err"]
    assert 0.8 < np.std(pull) < 1.2  # the catalogue is the truth plus the errors it quotes
