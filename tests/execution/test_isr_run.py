"""Calibration frames to calibrated photometry, end to end through the command-line tools.

`openastro-demo --raw` makes and ingests a raw-mode survey (frames with bias, dark current and flat field,
plus each camera's bias, dark and flat frames); `openastro-submit pipelines/calib.yaml` builds the masters;
`openastro-butler certify-calibrations` gives them a validity range; `openastro-submit` then runs the science
frames of the amateur camera (ota80) through isr + plateSolve + calibrate, while the lco1m frames (standing in
for frames reduced by their observatory: not in isr:instruments) are read as they are. One module fixture runs
it all once (about a minute here).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from openastro_parsl.butler import Butler
from openastro_parsl.cli.butler import main as butler_main
from openastro_parsl.cli.demo import main as demo_main
from openastro_parsl.cli.submit import main as submit_main
from openastro_parsl.registry.calibs import certified

ROOT = Path(__file__).resolve().parents[2]
CALIB = ROOT / "pipelines" / "calib.yaml"
IMAGE = ROOT / "pipelines" / "image.yaml"
WHERE = "instrument IN ('ota80', 'lco1m')"


def _cli(main, *args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def _state(butler: Butler) -> tuple:
    reg = butler.registry
    return reg.count_datasets(), tuple(c.name for c in reg.query_collections())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    repo = tmp_path_factory.mktemp("isr") / "repo"
    code, out = _cli(demo_main, repo, "--seed", 5, "--raw")
    assert code == 0, out
    assert "calibration frames" in out
    code, out = _cli(submit_main, "-b", repo, "-p", CALIB, "-i", "demo/defaults", "-o", "calib/run1")
    assert code == 0, out
    code, out = _cli(butler_main, "certify-calibrations", repo, "calib/run1", "calib/all", "--begin", "20260301",
                     "--end", "20260630")
    assert code == 0, out
    code, out = _cli(submit_main, "-b", repo, "-p", f"{IMAGE}#isr,plateSolve,calibrate", "-i",
                     "demo/defaults,calib/all", "-o", "u/t/isr", "-c", "isr:instruments=[ota80]", "-d", WHERE)
    assert code == 0, out
    butler = Butler(repo)
    return butler, butler.registry, out


def test_masters_are_made_per_instrument_and_band_and_certified(run):
    butler, reg, _ = run
    assert {r.data_id["instrument"] for r in reg.query_datasets("masterBias", ["calib/run1"])} == \
        {"lco1m", "slt40", "ota80"}
    assert len(reg.query_datasets("masterFlat", ["calib/run1"])) == 6
    assert len(certified(reg, "masterFlat", ["calib/all"])) == 6


def test_isr_runs_for_the_selected_camera_and_feeds_solving_and_calibration(run):
    butler, reg, _ = run
    exposures = json.loads((butler.root / "demo_survey" / "truth.json").read_text())["exposures"]
    ota = [e for e in exposures if e["instrument"] == "ota80"]
    lco = [e for e in exposures if e["instrument"] == "lco1m"]
    post = reg.query_datasets("postIsrImage", ["u/t/isr"])
    assert sorted(r.data_id["exposure"] for r in post) == sorted(e["exposure"] for e in ota)
    for name in ("wcsSolution", "photoCalib"):
        refs = reg.query_datasets(name, ["u/t/isr"])
        assert len(refs) == len(ota) + len(lco)
        for ref in refs:
            inputs = {reg.get_dataset(i).name for i in reg.quantum_provenance(ref.id)["inputs"]}
            want = "postIsrImage" if ref.data_id["instrument"] == "ota80" else "raw"
            assert want in inputs and ({"raw", "postIsrImage"} - {want}) & inputs == set(), (ref, inputs)
    image = butler.get("postIsrImage", {"instrument": "ota80", "exposure": ota[0]["exposure"]}, collections="u/t/isr")
    assert image.header["EGAIN"] == 1.0 and image.header["BUNIT"] == "electron"
    assert image.mask is not None and image.variance is not None
    d = [butler.get("photoCalib", {"instrument": "ota80", "exposure": e["exposure"]}, collections="u/t/isr")["zp"]
         - e["zero_point"] for e in ota]
    assert np.median(np.abs(d)) < 0.03, d  # the same figure as the already-reduced survey gets (~0.01)
    assert butler.verify()[1] == []


def test_bad_input_is_one_line_and_leaves_the_registry_unchanged(run):
    butler, reg, _ = run
    before = _state(butler)
    code, out = _cli(butler_main, "certify-calibrations", butler.root, "calib/run1", "calib/all", "--begin",
                     "20260601", "--end", "20260701")
    assert code != 0 and len(out.strip().splitlines()) == 1 and "overlaps" in out
    assert _state(butler) == before
    code, out = _cli(butler_main, "certify-calibrations", butler.root, "calib/run1", "calib/late", "--begin",
                     "20270101", "--end", "20271231")
    assert code == 0
    before = _state(butler)
    code, out = _cli(submit_main, "-b", butler.root, "-p", f"{IMAGE}#isr,plateSolve", "-i",
                     "demo/defaults,calib/late", "-o", "u/t/late", "-c", "isr:instruments=[ota80]", "-d", WHERE)
    assert code != 0
    assert "needed by task 'isr' for exposure" in out and "(night 2026" in out and "certified only for 20270101-20271231" in out
    assert _state(butler) == before
