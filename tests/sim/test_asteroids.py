"""Minor planets in the simulator: an option that leaves the default survey byte-identical, and, when asked
for, main-belt bodies whose orbit file, truth and pixels agree."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from astropy.io import fits

from openastro_parsl.astro.match import angular_separation
from openastro_parsl.astro.mpcorb import read_mpcorb
from openastro_parsl.astro.orbits import predict
from openastro_parsl.sim import asteroids as sso
from openastro_parsl.sim.instruments import SITES
from openastro_parsl.sim.survey import generate_survey


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def with_asteroids(tmp_path_factory):
    m = generate_survey(tmp_path_factory.mktemp("asteroids") / "s", seed=42, size="small", asteroids=2)
    return m, json.loads(m.truth.read_text())


def test_default_mode_never_runs_asteroid_code(tmp_path, monkeypatch, survey):
    def boom(*_a, **_k):
        raise AssertionError("asteroid code ran in the default mode")

    for name in ("make_asteroids", "track", "write_mpcorb"):
        monkeypatch.setattr(sso, name, boom)
    again = generate_survey(tmp_path / "again", seed=42, size="small")
    assert again.orbit_file is None and not (again.outdir / "mpcorb.dat").exists()
    for a, b in zip(again.raw_files, survey.raw_files, strict=True):
        assert _sha(a) == _sha(b), a.name
    assert _sha(again.truth) == _sha(survey.truth)


def test_frames_without_a_body_are_unchanged(with_asteroids, survey):
    m, truth = with_asteroids
    seen = {e["file"] for e in truth["exposures"] if e.get("asteroids")}
    assert len(seen) >= 6
    same = 0
    for a, b in zip(m.raw_files, survey.raw_files, strict=True):
        assert a.name == b.name
        if a.name not in seen:
            assert _sha(a) == _sha(b), a.name
            same += 1
    assert same == len(m.raw_files) - len(seen)


def test_orbit_file_truth_and_pixels_agree(with_asteroids, survey):
    m, truth = with_asteroids
    orbits = read_mpcorb(m.orbit_file)
    bodies = truth["asteroids"]["bodies"]
    assert list(orbits["designation"]) == [b["designation"] for b in bodies] == ["OA-A1", "OA-A2"]
    for row in orbits:
        assert 2.2 < row["a"] < 3.1 and row["e"] < 0.1 and row["incl"] < 13  # main belt
    checked = bright = 0
    for e in truth["exposures"]:
        for name, pos in e.get("asteroids", {}).items():
            site = SITES[e["site"]]
            eph = predict(orbits[orbits["designation"] == name], e["mjd"], (site.lon, site.lat, site.height_m))
            assert float(angular_separation(eph.ra[0], eph.dec[0], pos["ra"], pos["dec"])) * 3600 < 0.01
            assert 1.0 < eph.rate_arcsec_per_hour[0] < 150.0  # a main-belt rate (slow here: ~130 deg elongation)
            if not pos["in_frame"]:
                continue
            x, y = int(round(pos["x"])), int(round(pos["y"]))
            new = fits.getdata(m.outdir / "raw" / e["file"]).astype(float)
            old = fits.getdata(survey.outdir / "raw" / e["file"]).astype(float)
            box = (slice(max(y - 2, 0), y + 3), slice(max(x - 2, 0), x + 3))
            sigma = 1.4826 * np.median(np.abs(old - np.median(old)))  # the sky's pixel noise
            excess = (new[box].sum() - old[box].sum()) / (5 * sigma)  # the body in the pixels, in box-noise units
            assert excess > 3, (e["file"], name, excess)
            checked += 1
            bright += excess > 20
    assert checked >= 6 and bright >= 6
