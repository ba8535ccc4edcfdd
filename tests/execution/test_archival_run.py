"""A repository of light curves only (no images), end to end: `openastro-butler ingest-lightcurves` of a seeded
ground-based CSV (two bands, two telescopes, HJD_UTC times, a known period) and of the real TESS light curve of
WASP-126, then `openastro-submit ... pipelines/openastro.yaml#archival` on the local site (real Parsl HTEX), and
the periods and the transit checked against the truth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import EarthLocation, SkyCoord
from astropy.time import Time
from click.testing import CliRunner
from testdata import REAL_DATA

from openastro_parsl.butler import Butler
from openastro_parsl.cli.butler import main as butler_main
from openastro_parsl.cli.plan import main as plan_main

ROOT = Path(__file__).resolve().parents[2]
TESS = REAL_DATA / "hlsp_tess-data-alerts_tess_phot_00025155310-s01_tess_v1_lc.fits"
RUN = "u/t/archival"
PERIOD, RA, DEC = 0.4137, 150.1, 20.3
SITE = (28.7606, -17.8792, 2326.0)
WASP126_PERIOD = 3.2888  # Maxted et al. 2016 (../shared/data/real/README.md)


def ground_csv(path: Path, seed: int = 11) -> None:
    """Two telescopes (T2 0.03 mag off T1), V and B, 25 nights from La Palma, a 0.4137-d pulsation on BJD_TDB,
    written with HJD_UTC times as ground-based tables give them."""
    rng = np.random.default_rng(seed)
    nights = np.repeat(np.arange(25), 24)
    jd = np.sort(2460400.38 + nights + np.tile(np.linspace(0, 0.22, 24), 25) + rng.normal(0, 0.002, nights.size))
    loc = EarthLocation.from_geodetic(SITE[1] * u.deg, SITE[0] * u.deg, SITE[2] * u.m)
    t = Time(jd, format="jd", scale="utc", location=loc)
    star = SkyCoord(RA * u.deg, DEC * u.deg)
    bjd = (t.tdb + t.light_travel_time(star, "barycentric")).jd
    hjd = (t + t.light_travel_time(star, "heliocentric")).jd
    band = np.where(np.arange(jd.size) % 2 == 0, "V", "B")
    inst = np.where(rng.uniform(size=jd.size) < 0.5, "T1", "T2")
    phase = 2 * np.pi * (bjd - 2460400.0) / PERIOD
    amp = np.where(band == "V", 0.15, 0.20)
    mag = (np.where(band == "V", 12.0, 12.5) + np.where(inst == "T2", 0.03, 0.0) + amp * np.sin(phase)
           + 0.3 * amp * np.sin(2 * phase + 0.7) + rng.normal(0, 0.01, jd.size))
    rows = [f"{h:.7f},{b},{i},{m:.4f},0.0100" for h, b, i, m in zip(hjd, band, inst, mag, strict=True)]
    path.write_text("HJD,Filter,Telescope,Mag,eMag\n" + "\n".join(rows) + "\n")


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real data folder {REAL_DATA} absent")
def test_light_curve_only_repository_through_openastro_submit(tmp_path):
    repo = tmp_path / "repo"
    csv = tmp_path / "gb_v1.csv"
    ground_csv(csv)
    cli = CliRunner()
    for args in (["create", repo],
                 ["ingest-lightcurves", repo, csv, "--target", "GB-V1", "--ra", RA, "--dec", DEC, "--kind", "variable",
                  "--columns", "time=HJD,mag=Mag,err=eMag,band=Filter,instrument=Telescope", "--time-system", "HJD",
                  "--site", ",".join(map(str, SITE))],
                 ["ingest-lightcurves", repo, TESS, "--target", "WASP-126"]):
        out = cli.invoke(butler_main, [str(a) for a in args])
        assert out.exit_code == 0, out.output
    # the image-based branch cannot plan here, and says why; #archival is what such a repository runs
    plan = cli.invoke(plan_main, ["-b", str(repo), "-p", f"{ROOT / 'pipelines' / 'openastro.yaml'}#lightcurve",
                                  "-i", "lightcurves/archival", "-o", "u/t/images"])
    assert plan.exit_code == 1 and "empty quantum graph" in plan.output
    sub = subprocess.run([sys.executable, "-m", "openastro_parsl.cli.submit_entry", "-b", str(repo),
                          "-p", f"{ROOT / 'pipelines' / 'openastro.yaml'}#archival", "-i", "lightcurves/archival",
                          "-o", RUN, "-c", "periodSearch:max_nterms=1", "-c", "periodSearch:n_candidates=2"],
                         capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert sub.returncode == 0, sub.stdout[-3000:] + sub.stderr[-3000:]
    butler = Butler(repo)

    pg = butler.get("periodogram", {"target": "GB-V1"}, collections=RUN)
    assert pg["period"] == pytest.approx(PERIOD, abs=3e-4) and pg["fap"] < 1e-20
    assert sorted(pg["bands"]) == ["B", "V"] and pg["offsets"] == "instrument"
    assert butler.get("periodogram", {"target": "WASP-126"}, collections=RUN)["period"] == \
        pytest.approx(WASP126_PERIOD, abs=0.01)  # the transits dominate the Lomb-Scargle power

    search = butler.get("transitSearch", {"target": "WASP-126"}, collections=RUN)
    assert search["detected"] and search["period"] == pytest.approx(WASP126_PERIOD, abs=2e-3)
    assert 0.005 < search["depth"] < 0.008  # README of the real data: about 0.6-0.7 %
    times = butler.get("transitTimes", {"target": "WASP-126"}, collections=RUN)
    assert len(times) >= 6 and times.meta["period"] == pytest.approx(WASP126_PERIOD, abs=2e-3)
    assert np.all(times["t_obs"] > 2458325) and np.all(times["t_obs"] < 2458355)  # sector 1, BJD_TDB

    summary = json.loads(next((repo / "submit").rglob("summary.json")).read_text())
    per_task = summary["per_task"]
    assert per_task["periodSearch"]["succeeded"] == 2
    assert per_task["transitSearch"] == {**per_task["transitSearch"], "succeeded": 1, "no_work": 1}  # GB-V1: a variable
    assert per_task["transitTiming"]["succeeded"] == 1
    assert butler.verify()[1] == []
