"""Plate solving (plateSolve): both engines against the demo survey's true WCS, the header-WCS check, the
wcs_failed path, the DSS M67 plate, the index cache, and one quantum through plan + worker runner."""

from __future__ import annotations

import json
import shutil
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from testdata import REAL_DATA

from openastro_parsl.astro.wcs import wcs_from_cards
from openastro_parsl.datastore.image import Image
from openastro_parsl.tasks.astrometry import (
    Catalogue,
    Hints,
    PlateSolveConfig,
    PlateSolveTask,
    engines_for,
    hints_from,
    plate_solve,
    wcs_difference_rms,
)
from openastro_parsl.tasks.astrometry import net as astrometry_net
from openastro_parsl.tasks.astrometry.quads import quad_codes

COLL = "demo/defaults"
MAX_RMS_TRUTH = 0.3  # pixels, solved vs true WCS at the catalogue stars on the frame (the bar)
NET_MISSING = ("solve-field / build-astrometry-index not on PATH: run bin/install-astrometry "
               "(apt-get install astrometry.net); the astrometry.net engine is NOT tested here")
needs_net = pytest.mark.skipif(not astrometry_net.available(), reason=NET_MISSING)
ENGINES = [pytest.param("builtin", id="builtin"), pytest.param("astrometry_net", id="astrometry_net", marks=needs_net)]


def _raw(demo, e) -> Image:
    return demo.butler.get("raw", {"instrument": e["instrument"], "exposure": e["exposure"]}, collections=COLL)


def _refcat(demo, field="demo1") -> Table:
    return demo.butler.get("refcat", {"field": field}, collections=COLL)


def _pick(truth, has_wcs: bool, per_instrument: int = 2) -> list[dict]:
    out = []
    for inst in ("lco1m", "slt40", "ota80"):
        out += [e for e in truth["exposures"] if e["instrument"] == inst and e["has_wcs"] == has_wcs][:per_instrument]
    return out


def _truth_rms(record, e, refcat, shape) -> float:
    rms, n = wcs_difference_rms(wcs_from_cards(record["wcs"]), wcs_from_cards(e["wcs"]), Catalogue.from_table(refcat),
                                shape)
    assert n >= 8
    return rms


@pytest.fixture(scope="module")
def index_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("astrometry-index")


# -- the science kernels --------------------------------------------------------------------------------------
def test_quad_codes_are_similarity_invariant_and_label_free():
    """Shift, rotation, scale and relabelling leave a quad's code unchanged; a mirror image changes it."""
    rng = np.random.default_rng(3)
    z = rng.uniform(0, 100, 4) + 1j * rng.uniform(0, 100, 4)
    codes, _, _, _ = quad_codes(z, np.array([[0, 1, 2, 3]]))
    moved = 2.7 * np.exp(1j * 1.1) * z + (40 - 13j)
    perm = np.array([2, 0, 3, 1])
    codes2, order2, _, _ = quad_codes(moved[perm], np.array([[0, 1, 2, 3]]))
    np.testing.assert_allclose(codes2, codes, atol=1e-12)
    assert 0 <= codes[0, 0] + codes[0, 2] <= 1 and codes[0, 0] <= codes[0, 2]
    mirrored, _, _, _ = quad_codes(np.conj(z), np.array([[0, 1, 2, 3]]))
    assert np.abs(mirrored - codes).max() > 0.02
    # The mirrored quad, mirrored back, is the original again: that is how both parities are searched.
    back, _, _, _ = quad_codes(np.conj(np.conj(z) * np.exp(0.4j)), np.array([[0, 1, 2, 3]]))
    np.testing.assert_allclose(back, codes, atol=1e-12)


def test_weighted_tan_fit_recovers_a_known_wcs_and_discounts_noisy_stars():
    """The weighted TAN fit reproduces an exact (rotated, mirrored) TAN WCS from its own points, and a star
    given a large centroid error barely moves it."""
    from openastro_parsl.tasks.astrometry.fit import fit_wcs

    true = wcs_from_cards({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.1, "CRVAL2": 2.2,
                           "CRPIX1": 64.5, "CRPIX2": 64.5, "CD1_1": 2.2e-4, "CD1_2": 1.3e-4,
                           "CD2_1": 1.3e-4, "CD2_2": -2.2e-4})
    rng = np.random.default_rng(5)
    x, y = rng.uniform(0, 127, 15), rng.uniform(0, 127, 15)
    ra, dec = true.wcs_pix2world(x, y, 0)
    cat = Catalogue(ra, dec, np.zeros(15))
    fitted = fit_wcs(x, y, ra, dec, shape=(128, 128))
    assert wcs_difference_rms(fitted, true, cat, (128, 128))[0] < 1e-6
    assert fitted.wcs.crpix == pytest.approx([64.5, 64.5], abs=1e-6)  # reference point moved to the centre
    x_bad = x.copy()
    x_bad[0] += 3.0
    weights = np.ones(15)
    weights[0] = 1e-4
    unweighted = wcs_difference_rms(fit_wcs(x_bad, y, ra, dec), true, cat, (128, 128))[0]
    weighted = wcs_difference_rms(fit_wcs(x_bad, y, ra, dec, weights=weights), true, cat, (128, 128))[0]
    assert unweighted > 0.1 and weighted < 0.01


def test_hints_from_headers_of_each_convention():
    h = fits.Header({"OBJCTRA": "10 00 24.00", "OBJCTDEC": "+02 12 00.0", "XPIXSZ": 3.76, "FOCALLEN": 408.0})
    hints = hints_from(h)
    assert hints.ra == pytest.approx(150.1) and hints.dec == pytest.approx(2.2)
    assert hints.scale_arcsec == pytest.approx(1.901, abs=1e-3)
    dss = fits.Header({"OBJCTRA": "08 51 20.100", "OBJCTDEC": "+11 48 43.00", "PLTSCALE": 67.2, "XPIXELSZ": 25.28445})
    assert hints_from(dss).scale_arcsec == pytest.approx(1.699, abs=1e-3)
    lco = fits.Header({"RA": 150.1, "DEC": 2.2, "PIXSCALE": 0.39})
    assert hints_from(lco) == Hints(150.1, 2.2, 0.39)
    # Ingest records win over header cards (they were translated per instrument).
    rec = {"exposure": {"ra": 10.0, "dec": -5.0}, "instrument": {"pixel_scale": 1.5}}
    assert hints_from(lco, rec) == Hints(10.0, -5.0, 1.5)
    assert hints_from(fits.Header()) == Hints()


def test_auto_prefers_astrometry_net_when_installed():
    assert engines_for("builtin") == ["builtin"]
    expected = ["astrometry_net", "builtin"] if astrometry_net.available() else ["builtin"]
    assert engines_for("auto") == expected


# -- the demo survey ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_engines_solve_demo_frames_without_wcs(demo, engine, index_cache):
    """Frames the survey wrote without a WCS are solved to well under 0.3 px of the true WCS."""
    truth = demo.truth
    frames = _pick(truth, has_wcs=False)
    assert {e["instrument"] for e in frames} == {"slt40", "ota80"}  # lco1m always carries a WCS
    refcat = _refcat(demo)
    task = PlateSolveTask(PlateSolveConfig(engine=engine, index_cache_dir=str(index_cache)))
    for e in frames:
        raw = _raw(demo, e)
        assert raw.wcs is None
        rec = task.run(raw=raw, refcat=refcat)["solution"]
        assert rec["status"] == "solved", (e["file"], rec["reason"])
        assert rec["engine"] == engine
        assert rec["n_matched"] >= 6 and rec["rms_pix"] < 0.5
        assert rec["false_alarm_prob"] < 1e-9
        scale = truth["instruments"][e["instrument"]]["pixel_scale"]
        assert rec["pixel_scale_arcsec"] == pytest.approx(scale, rel=2e-3)
        assert _truth_rms(rec, e, refcat, raw.shape) < MAX_RMS_TRUTH
        json.dumps(rec, allow_nan=False)  # a StructuredData record: plain JSON


@pytest.mark.parametrize("engine", ENGINES)
def test_engines_solve_frames_of_every_camera_when_not_trusting_headers(demo, engine, index_cache):
    """With the header WCS ignored, one frame per camera (the three pixel scales, a flipped parity and a
    37-degree rotation) solves to the truth."""
    truth = demo.truth
    refcat = _refcat(demo)
    task = PlateSolveTask(PlateSolveConfig(engine=engine, trust_header_wcs=False, index_cache_dir=str(index_cache)))
    for e in _pick(truth, has_wcs=True, per_instrument=1):
        raw = _raw(demo, e)
        rec = task.run(raw=raw, refcat=refcat)["solution"]
        assert rec["status"] == "solved", (e["file"], rec["reason"])
        assert _truth_rms(rec, e, refcat, raw.shape) < MAX_RMS_TRUTH


def test_builtin_solves_blind_without_any_hint(demo):
    """No pointing and no scale: the quad search spans the whole catalogue and every frame size."""
    e = next(e for e in demo.truth["exposures"] if e["instrument"] == "ota80" and not e["has_wcs"])
    raw, refcat = _raw(demo, e), _refcat(demo)
    rec = plate_solve(raw, refcat, PlateSolveConfig(engine="builtin", use_hints=False))
    assert rec["status"] == "solved", rec["reason"]
    assert rec["hints"] == {"ra": None, "dec": None, "scale_arcsec": None}
    assert "blind" in rec["reason"]
    assert _truth_rms(rec, e, refcat, raw.shape) < MAX_RMS_TRUTH


def test_header_wcs_is_confirmed_and_kept(demo):
    e = next(e for e in demo.truth["exposures"] if e["instrument"] == "slt40" and e["has_wcs"])
    raw, refcat = _raw(demo, e), _refcat(demo)
    rec = plate_solve(raw, refcat, PlateSolveConfig(engine="builtin"))
    assert rec["status"] == "header" and rec["engine"] == "header"
    assert rec["n_matched"] >= 6
    assert _truth_rms(rec, e, refcat, raw.shape) < 1e-6  # the header WCS is the truth, kept as it was


@pytest.mark.parametrize("engine,card,offset", [
    pytest.param(*p, id=f"{p[0]}-{p[1]}", marks=needs_net if p[0] == "astrometry_net" else ())
    for p in [("builtin", "CRVAL2", 15.0 / 3600.0), ("astrometry_net", "CRVAL2", 15.0 / 3600.0),
              ("builtin", "CRPIX1", 1.0)]])
def test_wrong_header_wcs_is_replaced_by_a_solution(demo, engine, card, offset, index_cache):
    """A header WCS 15 arcsec off (no star within the match radius), or just one pixel off (every star
    matched, but all shifted), is not confirmed by the catalogue; the frame is solved instead."""
    e = next(e for e in demo.truth["exposures"] if e["instrument"] == "lco1m")
    raw, refcat = _raw(demo, e).copy(), _refcat(demo)
    raw.header[card] = raw.header[card] + offset
    rec = plate_solve(raw, refcat, PlateSolveConfig(engine=engine, index_cache_dir=str(index_cache)))
    assert rec["status"] == "solved" and rec["engine"] == engine
    assert "header WCS not confirmed" in rec["reason"]
    assert _truth_rms(rec, e, refcat, raw.shape) < MAX_RMS_TRUTH


@needs_net
def test_auto_falls_back_to_builtin_when_solve_field_fails(demo, index_cache):
    """An odds bar solve-field can never reach makes it fail for real; auto then solves with the built-in
    matcher and says why."""
    e = next(e for e in demo.truth["exposures"] if e["instrument"] == "slt40" and not e["has_wcs"])
    raw, refcat = _raw(demo, e), _refcat(demo)
    rec = plate_solve(raw, refcat, PlateSolveConfig(engine="auto", odds_to_solve=1e30,
                                                    index_cache_dir=str(index_cache)))
    assert rec["status"] == "solved" and rec["engine"] == "builtin"
    assert "astrometry_net: hinted: solve-field found no solution" in rec["reason"]
    assert _truth_rms(rec, e, refcat, raw.shape) < MAX_RMS_TRUTH


# -- frames that must not solve -------------------------------------------------------------------------------
def _random_catalogue(refcat: Table, seed: int) -> Table:
    """Same size, density, magnitudes and area as the real catalogue, stars in other places: a wrong field."""
    rng = np.random.default_rng(seed)
    ra, dec = np.asarray(refcat["ra"]), np.asarray(refcat["dec"])
    return Table({"id": refcat["id"], "ra": rng.uniform(ra.min(), ra.max(), len(ra)),
                  "dec": rng.uniform(dec.min(), dec.max(), len(dec)), "r": refcat["r"]})


@pytest.mark.parametrize("engine", ["auto", pytest.param("astrometry_net", marks=needs_net), "builtin"])
def test_wrong_field_catalogue_gives_wcs_failed(demo, engine, index_cache):
    e = next(e for e in demo.truth["exposures"] if e["instrument"] == "ota80" and not e["has_wcs"])
    raw = _raw(demo, e)
    wrong = _random_catalogue(_refcat(demo), seed=7)
    t0 = time.perf_counter()
    rec = PlateSolveTask(PlateSolveConfig(engine=engine, index_cache_dir=str(index_cache), max_seconds=20.0)).run(
        raw=raw, refcat=wrong, data_id={"instrument": "ota80", "exposure": e["exposure"]})["solution"]
    assert rec["status"] == "wcs_failed"
    assert rec["wcs"] == {} and rec["rms_pix"] is None
    assert rec["reason"] and rec["n_sources"] >= 10
    if engine == "auto" and astrometry_net.available():
        assert "astrometry_net:" in rec["reason"] and "builtin:" in rec["reason"]
    assert time.perf_counter() - t0 < 40
    json.dumps(rec, allow_nan=False)


def test_pure_noise_frame_gives_wcs_failed(demo):
    e = next(e for e in demo.truth["exposures"] if e["instrument"] == "slt40" and not e["has_wcs"])
    raw = _raw(demo, e)
    noise = np.random.default_rng(11).normal(500.0, 12.0, raw.shape).astype(np.float32)
    rec = plate_solve(Image(noise, raw.header.copy()), _refcat(demo), PlateSolveConfig())
    assert rec["status"] == "wcs_failed"
    assert "sources detected" in rec["reason"]


def test_bad_catalogue_is_an_error_naming_the_frame(demo):
    e = demo.truth["exposures"][0]
    bad = _refcat(demo)
    bad.remove_column("r")
    with pytest.raises(ValueError, match=r"instrument=lco1m, exposure=1001: refcat.*magnitude column 'r'"):
        PlateSolveTask().run(raw=_raw(demo, e), refcat=bad, data_id={"instrument": "lco1m", "exposure": 1001})


# -- real data: the DSS plate of M67 ----------------------------------------------------------------------------
DSS = REAL_DATA / "M6707HH.fits"
_PLATE_CARDS = ("AMDX", "AMDY", "PPO", "PLT", "CNPIX", "XPIXELSZ", "YPIXELSZ", "OBJCT", "DATAMAX", "DATAMIN")


@pytest.fixture(scope="module")
def dss_plate():
    """The plate with its WCS (and every plate-solution and pointing card) stripped, the true WCS, and a
    catalogue made from its own detections (a different extraction from the solver's: 10 sigma, isophotal
    centroids) placed on the sky by the true WCS."""
    if not DSS.exists():
        pytest.skip(f"real data not present: {DSS}")
    import sep
    from astropy.wcs import WCS

    with fits.open(DSS) as hdul:
        data, header = hdul[0].data.astype(np.float32), hdul[0].header.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        true = WCS(header)
    d = data.astype(float)
    bkg = sep.Background(d)
    objs = sep.extract(d - bkg, 10.0, err=bkg.globalrms, minarea=9)
    objs = objs[objs["flag"] == 0]
    ra, dec = true.wcs_pix2world(objs["x"], objs["y"], 0)
    cat = Table({"id": np.arange(len(objs)), "ra": ra, "dec": dec, "r": 25.0 - 2.5 * np.log10(objs["flux"])})
    stripped = header.copy()
    for key in [k for k in stripped if k.startswith(_PLATE_CARDS)]:
        del stripped[key]
    return Image(data, stripped), true, cat


@pytest.mark.parametrize("use_hints", [False, True], ids=["blind", "hinted"])
def test_dss_plate_resolved_by_builtin_engine(dss_plate, use_hints):
    image, true, cat = dss_plate
    assert image.wcs is None and hints_from(image.header) == Hints()
    if use_hints:  # the plate's nominal pointing and scale, as a telescope header would give them
        image = image.copy()
        image.header["OBJCTRA"], image.header["OBJCTDEC"] = "08 51 20.100", "+11 48 43.00"
        image.header["PLTSCALE"], image.header["XPIXELSZ"] = 67.2, 25.28445
    rec = plate_solve(image, cat, PlateSolveConfig(engine="builtin"))
    assert rec["status"] == "solved", rec["reason"]
    assert rec["n_matched"] >= 100
    assert rec["pixel_scale_arcsec"] == pytest.approx(1.70, abs=0.01)
    rms, n = wcs_difference_rms(wcs_from_cards(rec["wcs"]), true, Catalogue.from_table(cat), image.shape)
    assert n == len(cat) and rms < MAX_RMS_TRUTH
    centre = wcs_from_cards(rec["wcs"]).pixel_to_world_values(529.0, 529.0)
    assert centre[0] == pytest.approx(132.834, abs=2e-3) and centre[1] == pytest.approx(11.812, abs=2e-3)


def test_sip_solution_round_trips_through_its_cards(dss_plate):
    """With sip_degree set (and hundreds of stars), the record carries SIP cards that rebuild the same WCS."""
    image, true, cat = dss_plate
    rec = plate_solve(image, cat, PlateSolveConfig(engine="builtin", sip_degree=3))
    assert rec["status"] == "solved", rec["reason"]
    cards = rec["wcs"]
    assert cards["CTYPE1"] == "RA---TAN-SIP" and cards["A_ORDER"] == 3 and "B_2_1" in cards
    w = wcs_from_cards(json.loads(json.dumps(cards)))
    assert w.sip is not None
    rms, _ = wcs_difference_rms(w, true, Catalogue.from_table(cat), image.shape)
    assert rms < MAX_RMS_TRUTH


@needs_net
def test_dss_plate_resolved_by_astrometry_net(dss_plate, index_cache):
    image, true, cat = dss_plate
    rec = plate_solve(image, cat, PlateSolveConfig(engine="astrometry_net", index_cache_dir=str(index_cache)))
    assert rec["status"] == "solved", rec["reason"]
    rms, _ = wcs_difference_rms(wcs_from_cards(rec["wcs"]), true, Catalogue.from_table(cat), image.shape)
    assert rms < MAX_RMS_TRUTH


# -- the index cache ----------------------------------------------------------------------------------------------
@needs_net
def test_index_built_once_per_catalogue_even_by_concurrent_workers(demo, tmp_path):
    cat = Catalogue.from_table(_refcat(demo))
    cache = tmp_path / "cache"
    # Two builders racing on one cache directory (threads suffice: the builds are subprocesses, and the race
    # is decided by the filesystem rename, as between two workers' processes).
    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: astrometry_net.ensure_index(cat, cache), range(2)))
    assert paths[0] == paths[1]
    entries = sorted(p.name for p in cache.iterdir())
    assert entries == [astrometry_net.catalogue_checksum(cat, 1.0)]  # no half-built temp directories left
    manifest = json.loads((cache / entries[0] / "manifest.json").read_text())
    assert manifest["n_stars"] == len(cat) and len(manifest["indexes"]) >= 5
    for idx in manifest["indexes"]:
        assert (cache / entries[0] / idx["file"]).stat().st_size > 0
    t0 = time.perf_counter()
    assert astrometry_net.ensure_index(cat, cache) == cache / entries[0]  # cached: no rebuild
    assert time.perf_counter() - t0 < 0.5
    other = Catalogue(cat.ra[:-1], cat.dec[:-1], cat.mag[:-1])
    assert astrometry_net.catalogue_checksum(other, 1.0) != entries[0]


# -- through the planner and the worker-side runner ---------------------------------------------------------------
def test_plan_and_run_plate_solve_quanta(demo, tmp_path):
    """plateSolve plans one quantum per good frame (refcat as prerequisite) and runs through the worker runner,
    which hands it the ingest records as hints and writes the wcsSolution JSON."""
    from openastro_parsl.execution.runner import run_quantum
    from openastro_parsl.execution.submit import log_paths
    from openastro_parsl.graph.planner import Planner
    from openastro_parsl.pipeline.pipeline import load_pipeline

    spec = tmp_path / "plate.yaml"
    spec.write_text("description: plate solving only\ntasks:\n  plateSolve:\n"
                    "    class: openastro_parsl.tasks.astrometry.PlateSolveTask\n    config:\n      engine: builtin\n")
    g = Planner(demo.butler, load_pipeline(spec), inputs=[COLL], output_run="u/test/plate").plan()
    assert g.counts_by_task()["plateSolve"] == len(demo.truth["exposures"])
    no_wcs = {(e["instrument"], e["exposure"]): e for e in demo.truth["exposures"] if not e["has_wcs"]}
    chosen = [q for q in g.by_task("plateSolve") if (q.data_id["instrument"], q.data_id["exposure"]) in no_wcs][:2]
    info = g.tasks["plateSolve"]
    for q in chosen:
        ds = g.datasets
        inputs = {c: {"multiple": info.connections[c]["multiple"],
                      "datasets": [{"path": ds[i].path, "formatter": ds[i].formatter, "data_id": ds[i].data_id}
                                   for i in ids]} for c, ids in q.inputs.items()}
        (oid,) = q.outputs["solution"]
        outputs = {"solution": {"id": oid, "path": ds[oid].path, "formatter": ds[oid].formatter,
                                "dataset_type": ds[oid].dataset_type}}
        records = {dim: g.records[dim][",".join(f"{d}={q.data_id[d]}" for d in demo.butler.universe.required([dim]))]
                   for dim in info.dimensions}
        payload = {"quantum_id": q.id, "task": q.task, "class_path": info.class_path, "config": info.config,
                   "data_id": q.data_id, "inputs": inputs, "outputs": outputs, "records": records,
                   "datastore_root": g.header["datastore_root"],
                   "logs": log_paths(tmp_path / "run", q.task, q.data_id, q.id)}
        manifest = run_quantum(payload)
        assert manifest["ok"], manifest["error"]
        out = demo.butler.datastore.root / manifest["outputs"][0]["path"]
        rec = json.loads(out.read_text())
        e = no_wcs[(q.data_id["instrument"], q.data_id["exposure"])]
        assert rec["status"] == "solved"
        assert rec["hints"]["scale_arcsec"] == pytest.approx(records["instrument"]["pixel_scale"])
        refcat = _refcat(demo)
        assert _truth_rms(rec, e, refcat, tuple(demo.truth["instruments"][e["instrument"]]["shape"])) < MAX_RMS_TRUTH
    # The demo repository is shared by the session: leave no unregistered files behind.
    shutil.rmtree(demo.butler.datastore.root / "u" / "test" / "plate", ignore_errors=True)


# -- the whole survey -----------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_every_demo_frame_solves_to_the_truth(demo, engine, index_cache):
    truth = demo.truth
    refcat = _refcat(demo)
    task = PlateSolveTask(PlateSolveConfig(engine=engine, trust_header_wcs=False, index_cache_dir=str(index_cache)))
    worst = 0.0
    for e in truth["exposures"]:
        raw = _raw(demo, e)
        rec = task.run(raw=raw, refcat=refcat)["solution"]
        assert rec["status"] == "solved", (e["file"], rec["reason"])
        worst = max(worst, _truth_rms(rec, e, refcat, raw.shape))
    assert worst < MAX_RMS_TRUTH
