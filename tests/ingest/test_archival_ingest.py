"""Light curves and transit-time tables from files become datasets the light-curve pipeline plans on; a bad
file changes nothing, and every error names the real command-line flags."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from testdata import REAL_DATA

from openastro_parsl.cli.butler import main as butler_main
from openastro_parsl.graph.planner import Planner
from openastro_parsl.pipeline.pipeline import load_pipeline

TESS = REAL_DATA / "hlsp_tess-data-alerts_tess_phot_00025155310-s01_tess_v1_lc.fits"
K2_24 = REAL_DATA / "k2-24_petigura2018_transit_times.txt"
OPENASTRO = Path(__file__).resolve().parents[2] / "pipelines" / "openastro.yaml"
needs_real = pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real data folder {REAL_DATA} absent")


def butler_cli(*args):
    return CliRunner().invoke(butler_main, [str(a) for a in args])


def _ground_csv(path: Path, n=60, seed=1, bad_line: int | None = None) -> Path:
    rng = np.random.default_rng(seed)
    hjd = np.sort(2460400.4 + rng.uniform(0, 20, n))
    lines = ["HJD,Band,Vmag,eVmag"]
    for k, h in enumerate(hjd):
        mag = "12.x" if bad_line == k + 2 else f"{12 + 0.1 * np.sin(2 * np.pi * h / 0.61) + rng.normal(0, 0.01):.4f}"
        lines.append(f"{h:.6f},{'V' if k % 2 else 'B'},{mag},0.0100")
    path.write_text("\n".join(lines) + "\n")
    return path


def _state(butler):
    """Everything an ingest could change: datasets, records, collections, and the datastore's files."""
    reg = butler.registry
    files = sorted(str(p.relative_to(butler.root)) for p in butler.root.rglob("*")
                   if p.is_file() and not p.name.startswith("registry.sqlite3") and p.name != "butler.yaml")
    return (reg.count_datasets(), [sorted(map(str, reg.dimension_records(d))) for d in ("target", "field", "band")],
            sorted(c.name for c in reg.query_collections()), files)


def _flags_named(message: str) -> set[str]:
    return set(re.findall(r"--[a-z][a-z-]+", message))


def _command_flags(name: str) -> set[str]:
    return {opt for p in butler_main.commands[name].params for opt in getattr(p, "opts", []) if opt.startswith("--")}


@needs_real
def test_tess_light_curve_is_ingested_and_planned(butler):
    out = butler_cli("ingest-lightcurves", butler.root, TESS, "--target", "WASP-126")
    assert out.exit_code == 0, out.output
    lc = butler.get("lightcurve", {"target": "WASP-126", "band": "TESS"}, collections="lightcurves/archival")
    assert len(lc) > 10000 and lc["time"].min() > 2458300  # BJD_TDB as JD (sector 1, 2018)
    target = next(r for r in butler.registry.dimension_records("target") if r["name"] == "WASP-126")
    assert target["ra"] == pytest.approx(lc.meta["ra"])
    graph = Planner(butler, load_pipeline(f"{OPENASTRO}#archival"), inputs=["lightcurves/archival"],
                    output_run="u/t/wasp126").plan()
    assert sorted(q.task for q in graph.quanta.values()) == ["periodSearch", "transitSearch", "transitTiming"]


def test_ground_csv_is_ingested_per_band_and_planned(butler, tmp_path):
    csv = _ground_csv(tmp_path / "night.csv")
    out = butler_cli("ingest-lightcurves", butler.root, csv, "--target", "GB-V1", "--ra", "150.1", "--dec", "20.3",
                     "--columns", "time=HJD,mag=Vmag,err=eVmag,band=Band", "--time-system", "HJD",
                     "--site", "28.76,-17.88,2326", "--kind", "variable")
    assert out.exit_code == 0, out.output
    for band in ("B", "V"):
        lc = butler.get("lightcurve", {"target": "GB-V1", "band": band}, collections="lightcurves/archival")
        assert len(lc) == 30 and lc.meta["source_time_system"] == "HJD" and lc.meta["band"] == band
        assert set(lc["instrument"]) == {"night"}
    rec = next(r for r in butler.registry.dimension_records("target") if r["name"] == "GB-V1")
    assert (rec["ra"], rec["dec"], rec["kind"], rec["field"]) == (150.1, 20.3, "variable", "GB-V1")
    graph = Planner(butler, load_pipeline(f"{OPENASTRO}#archival"), inputs=["lightcurves/archival"],
                    output_run="u/t/gb").plan()
    tasks = sorted(q.task for q in graph.quanta.values())
    assert tasks == ["periodSearch", "transitSearch", "transitTiming"]
    psearch = next(q for q in graph.quanta.values() if q.task == "periodSearch")
    assert len(psearch.inputs["lightcurves"]) == 2  # both bands go to the multiband period search
    again = butler_cli("ingest-lightcurves", butler.root, csv, "--target", "GB-V1", "--columns",
                       "time=HJD,mag=Vmag,err=eVmag,band=Band", "--time-system", "HJD")
    assert again.exit_code == 1 and "already exists in run 'lightcurves/archival'" in again.output
    assert "--run" in again.output


def test_a_bad_row_leaves_the_repository_unchanged(butler, tmp_path):
    good = _ground_csv(tmp_path / "good.csv")
    bad = _ground_csv(tmp_path / "bad.csv", seed=2, bad_line=17)
    butler_cli("ingest-lightcurves", butler.root, good, "--target", "OLD", "--ra", "10", "--dec", "10",
               "--columns", "time=HJD,mag=Vmag,err=eVmag,band=Band", "--time-system", "HJD")
    before = _state(butler)
    out = butler_cli("ingest-lightcurves", butler.root, good, bad, "--target", "NEW", "--ra", "11", "--dec", "11",
                     "--columns", "time=HJD,mag=Vmag,err=eVmag,band=Band", "--time-system", "HJD", "--run", "other")
    assert out.exit_code == 1
    lines = [ln for ln in out.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"{bad}:17: column 'Vmag': '12.x' is not a number" in lines[0]
    assert _state(butler) == before


@needs_real
def test_k2_24_transit_times_both_planets(butler):
    out = butler_cli("ingest-transit-times", butler.root, K2_24, "--target", "K2-24", "--ra", "242.37",
                     "--dec", "-24.99")
    assert out.exit_code == 1 and "--time-system BKJD" in out.output
    assert _flags_named(out.output) <= _command_flags("ingest-transit-times")
    out = butler_cli("ingest-transit-times", butler.root, K2_24, "--target", "K2-24", "--ra", "242.37",
                     "--dec", "-24.99", "--time-system", "BKJD")
    assert out.exit_code == 0, out.output
    recs = {r["name"]: r for r in butler.registry.dimension_records("target")}
    assert recs["K2-24b"]["kind"] == "planet" and recs["K2-24c"]["field"] == "K2-24"
    b = butler.get("transitTimes", {"target": "K2-24b"}, collections="transits/published")
    c = butler.get("transitTimes", {"target": "K2-24c"}, collections="transits/published")
    assert list(b["epoch"]) == [0, 1, 2, 3, 20, 31] and list(c["epoch"]) == [0, 1, 10, 15]
    assert b["t_obs"][0] == pytest.approx(2072.7954 + 2454833.0, abs=1e-9)
    assert b.meta["period"] == pytest.approx(20.8851, abs=0.02) and c.meta["period"] == pytest.approx(42.3633, abs=0.05)
    one = butler_cli("ingest-transit-times", butler.root, K2_24, "--target", "K2-24", "--planet", "c",
                     "--time-system", "BKJD", "--run", "transits/c")
    assert one.exit_code == 0, one.output
    assert len(butler.get("transitTimes", {"target": "K2-24"}, collections="transits/c")) == 4
    graph = Planner(butler, load_pipeline(f"{OPENASTRO}#ttv"), inputs=["transits/published"],
                    output_run="u/t/k2").plan()
    planned = {graph.datasets[i].data_id["target"] for q in graph.quanta.values() for i in q.inputs["transit_times"]}
    assert planned == {"K2-24b", "K2-24c"}  # both planets reach ttvFit (one quantum per field, or per target)


def test_transit_times_csv_duplicates_and_bad_files(butler, tmp_path):
    butler.registry.sync_dimension_records("field", [{"name": "W", "ra": 1.0, "dec": 2.0}])
    butler.registry.sync_dimension_records("target", [{"name": "W", "field": "W", "ra": 1.0, "dec": 2.0,
                                                       "kind": "transit_host"}])
    csv = tmp_path / "times.csv"
    csv.write_text("planet,epoch,time,error\nb,0,2458326.10,0.0005\nb,1,2458329.39,0.0006\nb,1,2458329.3905,0.0006\n"
                   "b,3,2458335.96,0.0005\n")
    before = _state(butler)
    out = butler_cli("ingest-transit-times", butler.root, csv, "--target", "W")
    assert out.exit_code == 1 and "planet b epoch 1 on lines 3, 4" in out.output
    assert _flags_named(out.output) == {"--duplicates"} <= _command_flags("ingest-transit-times")
    assert _state(butler) == before
    out = butler_cli("ingest-transit-times", butler.root, csv, "--target", "W", "--duplicates", "combine")
    assert out.exit_code == 0, out.output
    assert "epoch 1: lines [3, 4] combined" in out.output
    tt = butler.get("transitTimes", {"target": "W"}, collections="transits/published")
    assert list(tt["epoch"]) == [0, 1, 3] and tt["t_obs"][1] == pytest.approx(2458329.39025, abs=1e-9)
    bad = tmp_path / "bad.csv"
    bad.write_text("planet,epoch,time,error\nb,0,2458326.10,0.0005\nb,x,2458329.39,0.0006\n")
    out = butler_cli("ingest-transit-times", butler.root, bad, "--target", "W", "--run", "x")
    assert out.exit_code == 1 and f"{bad}:3" in out.output
    out = butler_cli("ingest-transit-times", butler.root, csv, "--target", "nobody", "--run", "x")
    assert out.exit_code == 1 and "nobody" in out.output and "define-targets" in out.output


def test_error_messages_name_real_flags(butler, tmp_path):
    """Every --flag an ingest error suggests is an option of the command that printed it."""
    csv = _ground_csv(tmp_path / "g.csv")
    trunc = tmp_path / "trunc.csv"
    trunc.write_text("time,mag,mag_err\n5000.1,12,0.01\n5000.2,12.1,0.01\n")
    cases = [
        ["--target", "T", "--ra", "1", "--dec", "1"],                                      # no --columns
        ["--target", "T", "--ra", "1", "--dec", "1", "--columns", "time=HJD,mag=Vmag,err=eVmag"],  # no band
        ["--target", "T", "--columns", "time=HJD,mag=Vmag,err=eVmag,band=Band", "--time-system", "HJD"],
        ["--target", "T", "--ra", "1", "--dec", "1", "--columns", "time=HJD,mag=Vmag,err=eVmag,band=Band"],
        ["--target", "T", "--ra", "1", "--dec", "1", "--columns", "when=HJD"],
        ["--target", "T", "--ra", "1", "--dec", "1", "--columns", "time=HJD,mag=Vmag,err=eVmag,band=Band",
         "--time-system", "UT"],                                                             # unknown system
        ["--target", "T", "--ra", "1", "--dec", "1", "--band-map", "V"],
        ["--target", "T", "--ra", "1", "--dec", "1", "--site", "home"],
    ]
    flags = _command_flags("ingest-lightcurves")
    seen = set()
    for extra in cases:
        out = butler_cli("ingest-lightcurves", butler.root, csv, *extra)
        assert out.exit_code == 1, (extra, out.output)
        named = _flags_named(out.output)
        assert named and named <= flags, (extra, out.output)
        assert len(out.output.strip().splitlines()) == 1, out.output
        if "UT" in extra:
            assert named == {"--time-system"}, out.output  # an unknown system is only that, not missing coordinates
        seen |= named
    out = butler_cli("ingest-lightcurves", butler.root, trunc, "--target", "T", "--ra", "1", "--dec", "1",
                     "--band", "V", "--time-system", "BJD_TDB")
    assert out.exit_code == 1 and "trunc.csv:2" in out.output and _flags_named(out.output) <= flags
    assert {"--columns", "--band", "--time-system", "--ra", "--band-map", "--site", "--time-offset"} <= \
        seen | _flags_named(out.output)
    assert butler.registry.count_datasets() == 0


def test_aavso_download_through_the_cli(butler, tmp_path):
    header = ("JD,Magnitude,Uncertainty,HQuncertainty,Band,Observer Code,Comment Code(s),Comp Star 1,Comp Star 2,"
              "Charts,Comments,Transfomed,Airmass,Validation Flag,Cmag,Kmag,HJD,Star Name")
    rng = np.random.default_rng(5)
    rows = [header]
    for k in range(40):
        mag = f"{8 + 0.3 * np.sin(k / 3) + rng.normal(0, 0.01):.3f}"
        flag = "T" if k == 7 else "Z"
        mag = "<9.8" if k == 11 else mag
        rows.append(f"{2459001.5 + k * 0.37:.5f},{mag},0.010,,{'SG' if k % 2 else 'V'},OBS{k % 3},,,,,,0,1.1,{flag},,,,"
                    "RR Lyr")
    path = tmp_path / "aavsodata.txt"
    path.write_text("\n".join(rows) + "\n")
    out = butler_cli("ingest-lightcurves", butler.root, path, "--target", "RR Lyr", "--ra", "291.366",
                     "--dec", "42.784", "--kind", "variable")
    assert out.exit_code == 0, out.output
    assert "1 discrepant, 1 fainter-than skipped" in out.output
    g = butler.get("lightcurve", {"target": "RR Lyr", "band": "g"}, collections="lightcurves/archival")
    v = butler.get("lightcurve", {"target": "RR Lyr", "band": "V"}, collections="lightcurves/archival")
    assert len(g) + len(v) == 38 and set(g["instrument"]) <= {"OBS0", "OBS1", "OBS2"}
    assert g.meta["source_format"] == "aavso" and g.meta["source_bands"] == ["SG"]


def test_a_failure_while_writing_undoes_the_whole_ingest(butler, tmp_path):
    """Validation passes, then the second band's file cannot be written (a stray file holds its path): the first
    band's file is removed again and the transaction (run, target, field, bands, datasets) rolled back."""
    from openastro_parsl.datastore.datastore import dataset_relpath

    csv = _ground_csv(tmp_path / "two_bands.csv")
    keys = butler.registry.universe.required(("target", "band"))
    ext = butler.datastore.formatter("Table").extension
    stray = butler.root / dataset_relpath("lightcurves/archival", "lightcurve", keys, {"target": "S", "band": "V"}, ext)
    stray.parent.mkdir(parents=True)
    stray.write_text("left by a crash")
    before = _state(butler)
    out = butler_cli("ingest-lightcurves", butler.root, csv, "--target", "S", "--ra", "5", "--dec", "5",
                     "--columns", "time=HJD,mag=Vmag,err=eVmag,band=Band", "--time-system", "HJD")
    assert out.exit_code == 1 and "already exists in the datastore" in out.output
    assert _state(butler) == before


def test_docs_name_real_flags():
    """docs/lightcurves.md names only flags the two commands have (it mentions --time-scale/--time-format only
    to say there are none)."""
    text = (OPENASTRO.parents[1] / "docs" / "lightcurves.md").read_text()
    named = _flags_named(text) - {"--time-scale", "--time-format"}
    assert named <= _command_flags("ingest-lightcurves") | _command_flags("ingest-transit-times"), named
    assert {"--columns", "--time-system", "--time-offset", "--duplicates", "--max-dq", "--planet"} <= named
