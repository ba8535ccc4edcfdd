"""The README's "Your own telescope" walkthrough, run as written (bash, the command line only, Parsl on the local
site) on the real M67 frames and Gaia catalogue, then checked: every frame solved from its pixels against the real
catalogue, calibrated, and co-added, with the registry and files consistent."""

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from openastro_parsl.butler import Butler

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / "tests" / "data" / "real"


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- own-telescope:begin -->", 1)[1].split("<!-- own-telescope:end -->", 1)[0]
    return re.search(r"```bash\n(.*?)```", block, re.S).group(1)


@pytest.fixture(scope="module")
def telescope(tmp_path_factory):
    if not (REAL / "M67_B.fits").exists():
        pytest.skip(f"real M67 frames absent from {REAL}")
    home = tmp_path_factory.mktemp("newcomer")
    env = {**os.environ, "OPENASTRO": str(ROOT)}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", walkthrough()], cwd=home, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return Butler(home / "my-telescope" / "repo"), done.stdout


def test_every_command_of_the_walkthrough_succeeds(telescope):
    butler, out = telescope
    assert out.count("ingested 1, skipped 0 already ingested, quarantined 0") == 3
    assert "refcat {field=M67}: 1486 stars registered" in out
    assert butler.verify()[1] == []


def test_frames_solve_from_their_pixels_against_the_real_catalogue(telescope):
    butler, _ = telescope
    refs = butler.query_datasets("wcsSolution", "u/me/m67")
    assert len(refs) == 3
    for ref in refs:
        sol = butler.get(ref)
        assert sol["status"] == "solved", sol.get("reason")
        assert sol["pixel_scale_arcsec"] == pytest.approx(0.855, abs=0.01)
        assert sol["n_matched"] >= 30 and sol["rms_pix"] < 0.7


def test_frames_calibrate_and_coadd(telescope):
    butler, _ = telescope
    calibs = [butler.get(r) for r in butler.query_datasets("photoCalib", "u/me/m67")]
    assert sorted(c["band"] for c in calibs) == ["b", "rc", "v"]
    for c in calibs:
        assert c["n_used"] >= 15 and c["scatter"] < 0.03 and np.isfinite(c["zp_adu"])
    coadds = butler.query_datasets("coadd", "u/me/m67")
    assert sorted(r.data_id["band"] for r in coadds) == ["b", "rc", "v"]
    for ref in coadds:
        image = butler.get(ref)
        assert np.isfinite(np.asarray(image.data)).mean() > 0.5
    assert butler.query_datasets("fieldZeropoints", "u/me/m67")


def test_the_standard_field_gives_the_cameras_colour_terms_for_other_fields(telescope):
    """M67's field fit measures the camera's colour terms (against Gaia BP-RP, as bands.yaml asks); the file
    `colour-terms --write` saved is a config override a plan of another field takes as it is."""
    from openastro_parsl.pipeline.pipeline import load_pipeline

    butler, out = telescope
    saved = butler.root.parent / "colour_terms.yaml"
    assert "wrote colour_terms.yaml" in out and saved.exists()
    meta = butler.get(butler.query_datasets("fieldZeropoints", "u/me/m67")[0]).meta
    pipeline = load_pipeline(f"{ROOT / 'pipelines' / 'openastro.yaml'}#image", (),
                             override_files=(f"fieldCalibration:{saved}",))
    config = next(t.config for t in pipeline.tasks if t.label == "fieldCalibration")
    assert config.colour_terms_index == "BP-RP" == meta["colour_index"]
    assert sorted(config.colour_terms) == ["bnntt120/b", "bnntt120/rc", "bnntt120/v"]
    for key, (value, err) in config.colour_terms.items():
        assert value == pytest.approx(meta["colour_terms"][key][0], abs=1e-4) and 0 < err < 0.03
