"""The survey's raw mode: instrument signatures on the frames, calibration frames with each camera's headers,
truth to test ISR against; and the default mode left exactly as it was."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from astropy.io import fits

from openastro_parsl.butler import Butler
from openastro_parsl.ingest.ingest import ingest_raws
from openastro_parsl.ingest.translator import load_translators, translate_header
from openastro_parsl.sim import rawmode
from openastro_parsl.sim.calframes import N_BIAS, N_DARK, N_FLAT
from openastro_parsl.sim.survey import generate_survey

SEED = 3


@pytest.fixture(scope="module")
def raw_survey(tmp_path_factory):
    m = generate_survey(tmp_path_factory.mktemp("rawmode") / "s", seed=SEED, size="small", raw_mode=True)
    return m, json.loads(m.truth.read_text())


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_default_mode_never_runs_raw_mode_code(tmp_path, monkeypatch, survey):
    """Every raw-mode step is behind the flag: with them all made to fail, the default survey is still made,
    and it is byte-for-byte the session's survey of the same seed."""
    def boom(*_a, **_k):
        raise AssertionError("raw-mode code ran in the default mode")

    for name in ("signatures", "apply_signature", "mark_raw", "write_calibration"):
        monkeypatch.setattr(rawmode, name, boom)
    again = generate_survey(tmp_path / "again", seed=42, size="small")
    assert again.calibration_files == ()
    assert [p.name for p in again.raw_files] == [p.name for p in survey.raw_files]
    for a, b in zip(again.raw_files, survey.raw_files, strict=True):
        assert _sha(a) == _sha(b), a.name
    assert _sha(again.truth) == _sha(survey.truth)
    assert "raw_mode" not in json.loads(again.truth.read_text())


def test_calibration_frames_follow_each_cameras_conventions(raw_survey):
    m, truth = raw_survey
    frames = truth["raw_mode"]["calibration_frames"]
    translators = load_translators()
    for inst, expect_card in (("lco1m", "OBSTYPE"), ("slt40", "OBSTYPE"), ("ota80", "IMAGETYP")):
        own = [f for f in frames if f["instrument"] == inst]
        kinds = [f["kind"] for f in own]
        assert kinds.count("bias") == N_BIAS and kinds.count("dark") == N_DARK and kinds.count("flat") == 2 * N_FLAT
        assert len({f["exptime"] for f in own if f["kind"] == "dark"}) == 2  # a dark rate is tested, not assumed
        for f in own:
            h = fits.getheader(m.outdir / "raw" / f["file"])
            assert expect_card in h and "OBJECT" not in h
            assert ("FILTER" in h) == (f["kind"] == "flat")
            _, tr = translate_header(h, translators)
            assert tr.obs_type == f["kind"] and tr.data_id["exposure"] == f["exposure"] and not tr.reduced
            first = min(e["mjd_start"] for e in truth["exposures"] if e["instrument"] == inst)
            assert f["mjd_start"] < first  # taken before the night's science
    assert len(m.calibration_files) == len(frames)


def test_science_frames_carry_the_true_signature(raw_survey):
    """Undo the true bias, dark and flat by hand: the sky is the truth's, in every corner of the frame."""
    m, truth = raw_survey
    for inst in ("lco1m", "slt40", "ota80"):
        sig = np.load(m.outdir / truth["raw_mode"]["signature_files"][inst])
        assert np.median(sig["flat"]) == pytest.approx(1.0)
        e = next(x for x in truth["exposures"] if x["instrument"] == inst)
        h = fits.getheader(m.outdir / "raw" / e["file"])
        assert h.get("RLEVEL", 0) == 0
        data = fits.getdata(m.outdir / "raw" / e["file"]).astype(float)
        electrons = (data - sig["bias"]) * e["gain"] - sig["dark_e_per_s"] * e["exptime"]
        ny, nx = data.shape
        corner = (slice(0, ny // 5), slice(0, nx // 5))
        raw_sky = np.median(electrons[corner])
        flat_sky = np.nanmedian((electrons / np.where(sig["flat"] > 0.1, sig["flat"], np.nan))[corner])
        assert flat_sky == pytest.approx(e["sky_e_per_px"], rel=0.03), inst
        vignetted = float(np.median(sig["flat"][corner]))
        assert vignetted < 0.99 and raw_sky == pytest.approx(e["sky_e_per_px"] * vignetted, rel=0.03), inst
        assert np.median(data[corner]) > truth["raw_mode"]["instruments"][inst]["bias_level_adu"]


def test_raw_mode_is_deterministic(tmp_path, raw_survey):
    m, _ = raw_survey
    again = generate_survey(tmp_path / "again", seed=SEED, size="small", raw_mode=True)
    pick = [m.calibration_files[0], m.calibration_files[-1], m.exposure_files[0], m.exposure_files[-1]]
    for p in pick:
        assert _sha(p) == _sha(again.outdir / "raw" / p.name), p.name


def test_ingest_routes_calibration_frames_to_their_own_dataset_types(tmp_path, raw_survey):
    m, truth = raw_survey
    butler = Butler.create(tmp_path / "repo")
    report = ingest_raws(butler, [m.outdir / "raw"], run="raw/all", transfer="symlink")
    frames = truth["raw_mode"]["calibration_frames"]
    assert len(report.ingested) == len(truth["exposures"]) + len(frames)
    reg = butler.registry
    assert len(reg.query_datasets("raw", ["raw/all"])) == len(truth["exposures"])
    for kind in ("bias", "dark", "flat"):
        refs = reg.query_datasets(kind, ["raw/all"])
        assert len(refs) == sum(f["kind"] == kind for f in frames)
        bands = {r.data_id["band"] for r in refs}
        assert bands == ({"none"} if kind != "flat" else {"g", "r"})
    science_bands = {r.data_id["band"] for r in reg.query_datasets("raw", ["raw/all"])}
    assert "none" not in science_bands
