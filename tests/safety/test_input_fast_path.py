"""The fast input check works end to end: every registered file carries the size and mtime its checksum was
taken with (ingest in each transfer mode, butler.put, outputs registered by the submit loop), graphs carry
them to the workers, and a worker that finds them unchanged trusts the file without hashing it.

Hashing is counted from the quantum logs: ``changed_checksum`` writes one ``hashed input`` record per file it
hashes. Old registries (no mtime_ns column) and old graphs (format version 1) still work: they just hash."""

import gzip
import json
import logging
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import inspect
from testdata import QA, lco_header, make_small_repo, make_transfer_mode_repo, write_frame

from openastro_parsl.butler import REGISTRY_FILE, Butler
from openastro_parsl.datastore import checksum as checksum_mod
from openastro_parsl.datastore.checksum import VERIFY_ENV, changed_checksum, file_checksum
from openastro_parsl.execution.site import load_site
from openastro_parsl.execution.submit import GRAPH_FILE, Submission
from openastro_parsl.graph.planner import Planner
from openastro_parsl.graph.quantum_graph import VERSION, QuantumGraph
from openastro_parsl.ingest.ingest import ingest_raws
from openastro_parsl.pipeline.pipeline import load_pipeline
from openastro_parsl.registry.refs import DatasetType

MODES = {100: "copy", 101: "copy", 102: "symlink", 103: "symlink", 104: "direct", 105: "direct"}


def _assert_stat(butler, ref) -> None:
    st = os.stat(butler.path(ref))  # follows a symlink: the file a worker reads
    assert (ref.size, ref.mtime_ns) == (st.st_size, st.st_mtime_ns), str(ref)


def _raw(butler, exposure):
    (ref,) = butler.query_datasets("raw", "raw/all", where=f"exposure = {exposure}")
    return ref


def _plan(butler, output_run) -> QuantumGraph:
    return Planner(butler, load_pipeline(str(QA)), inputs=["defaults"], output_run=output_run).plan()


def _run(butler, output_run):
    site, src = load_site(None)
    sub = Submission.start(butler, _plan(butler, output_run), site, src)
    return sub, sub.run()


def _hashed(run_dir: Path) -> list[str]:
    """The ``hashed input`` records the workers wrote into the quanta's structured logs."""
    return [rec["message"] for f in (run_dir / "logs").rglob("*.jsonl") for line in f.read_text().splitlines()
            if (rec := json.loads(line))["logger"] == checksum_mod.log.name]


def _hashed_files(messages: list[str], butler) -> set:
    """Which inputs the hash records name: raw exposure numbers and "refcat" (every record names one)."""
    paths = {e: butler.path(_raw(butler, e)) for e in MODES}
    paths["refcat"] = butler.path(butler.query_datasets("refcat", "refcats")[0])
    named = {m: {k for k, p in paths.items() if m.startswith(f"hashed input {p} (")} for m in messages}
    assert all(len(ks) == 1 for ks in named.values()), named
    return set().union(*named.values())


def _tamper(path: Path, mtime_ns: int) -> None:
    """Same size, other bytes, then the given mtime."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(2880 + 400)
        old = f.read(16)
        f.seek(2880 + 400)
        f.write(bytes(b ^ 0xFF for b in old))
    os.utime(path, ns=(st.st_atime_ns, mtime_ns))
    assert os.stat(path).st_size == st.st_size


def _as_version_1(path: Path) -> None:
    """Rewrite a saved graph in format version 1: dataset rows without size and mtime_ns (columns 6 and 7)."""
    QuantumGraph.load(path).save(path, version=2)  # the row layout version 1 differs from
    doc = json.loads(gzip.decompress(path.read_bytes()))
    assert doc["version"] == 2 and VERSION == 3
    doc["version"] = 1
    for block in doc["datasets"].values():
        block["rows"] = [row[:6] + row[8:] for row in block["rows"]]
    path.write_bytes(gzip.compress(json.dumps(doc).encode()))


# -- (a) registration ---------------------------------------------------------------------------------
@pytest.mark.both_backends
def test_ingest_and_put_record_size_and_mtime_of_the_final_file(tmp_path):
    butler, frames = make_transfer_mode_repo(tmp_path)
    refs = butler.query_datasets("raw", "raw/all")
    assert len(refs) == 6
    for ref in refs + butler.query_datasets("refcat", "refcats"):
        assert ref.mtime_ns is not None
        _assert_stat(butler, ref)
    # symlink and direct: the source's own stat; copy: a copy keeping the source's mtime
    for exposure, frame in zip(MODES, frames, strict=True):
        ref = _raw(butler, exposure)
        assert butler.path(ref).is_symlink() == (MODES[exposure] == "symlink")
        assert (ref.size, ref.mtime_ns) == (frame.stat().st_size, frame.stat().st_mtime_ns)
    # the refs ingest hands back carry them too, and a re-opened registry reads them from the database
    more = write_frame(tmp_path / "incoming" / "f6.fits", lco_header(106))
    (new,) = ingest_raws(butler, [more]).ingested
    _assert_stat(butler, new)
    assert Butler(butler.root).registry.get_dataset(new.id) == new and new.mtime_ns is not None


def test_a_file_changed_after_hashing_gets_no_mtime(tmp_path):
    """The stat recorded must be the one the checksum was taken with: a file changed in between is recorded
    without mtime, so workers hash it (and find it is not the registered one) instead of trusting it."""
    butler = Butler.create(tmp_path / "repo")
    frame = write_frame(tmp_path / "f.fits", lco_header(1))
    hashed, checksum = frame.stat(), file_checksum(frame)
    store = butler.datastore
    for i, mode in enumerate(("copy", "symlink", "direct")):
        loc = store.transfer_in(frame, dataset_type="raw", key_dims=("instrument", "exposure"),
                                data_id={"instrument": "lco1m", "exposure": i}, run="raw/a", transfer=mode,
                                checksum=checksum, hashed=hashed)
        assert loc["mtime_ns"] == hashed.st_mtime_ns and loc["size"] == hashed.st_size
    os.utime(frame, ns=(hashed.st_atime_ns, hashed.st_mtime_ns + 10**9))
    for i, mode in enumerate(("copy", "symlink", "direct")):
        loc = store.transfer_in(frame, dataset_type="raw", key_dims=("instrument", "exposure"),
                                data_id={"instrument": "lco1m", "exposure": i}, run="raw/b", transfer=mode,
                                checksum=checksum, hashed=hashed)
        assert loc["mtime_ns"] is None and loc["size"] == hashed.st_size
    loc = store.write_at({"a": 1}, "u/x/a.json", "json")
    st = (tmp_path / "repo" / "u/x/a.json").stat()
    assert (loc["size"], loc["mtime_ns"]) == (st.st_size, st.st_mtime_ns)


# -- (b) the graph ------------------------------------------------------------------------------------
@pytest.mark.both_backends
def test_graph_carries_size_and_mtime_of_inputs_and_saves_them(tmp_path):
    butler, _ = make_transfer_mode_repo(tmp_path)
    graph = _plan(butler, "u/t/g")
    refs = {r.id: r for r in butler.query_datasets("raw", "raw/all") + butler.query_datasets("refcat", "refcats")}
    inputs = [n for n in graph.datasets.values() if n.exists]
    assert {n.id for n in inputs} == set(refs)
    for n in inputs:
        assert (n.size, n.mtime_ns) == (refs[n.id].size, refs[n.id].mtime_ns) and n.mtime_ns is not None
    assert all(n.size is None and n.mtime_ns is None for n in graph.datasets.values() if not n.exists)
    graph.save(tmp_path / "g.qgraph")
    loaded = QuantumGraph.load(tmp_path / "g.qgraph")
    assert loaded.datasets == graph.datasets and loaded.quanta == graph.quanta
    assert json.loads(gzip.decompress((tmp_path / "g.qgraph").read_bytes()))["version"] == VERSION


# Saved by the version-1 code (HEAD before this change) from a one-quantum graph.
_V1_GRAPH = (
    '{"format":"openastro-qgraph","version":1,"saved":"2026-12-05T16:13:56+0000","header":{"output_run":"u/t/old",'
    '"inputs":["raw/all"]},"tasks":{"frameStats":{"label":"frameStats","class_path":"tests.exec_tasks.FrameStats",'
    '"config":{},"config_hash":"00000000000000000000000000000000","dimensions":["instrument","exposure"],'
    '"connections":{"raw":{"dataset_type":"raw","dimensions":["instrument","exposure"],"storage_class":"RawImage",'
    '"multiple":false,"kind":"input"},"stats":{"dataset_type":"frameStats","dimensions":["instrument","exposure"],'
    '"storage_class":"StructuredData","multiple":false,"kind":"output"}},"resources":{}}},"dataset_types":{},'
    '"runs":["raw/all","u/t/old"],"datasets":{"raw":{"dims":["instrument","exposure"],"rows":[["r-1",0,'
    '"raw/all/raw/lco1m/raw_lco1m_101.fits","fits-image","abababababababababababababababababababababababababababab'
    'abababab",1,"lco1m",101]]},"frameStats":{"dims":["instrument","exposure"],"rows":[["s-1",1,'
    '"u/t/old/frameStats/lco1m/frameStats_lco1m_101.json","json",null,0,"lco1m",101]]}},"quanta":{"frameStats":'
    '{"dims":["instrument","exposure"],"rows":[["q-1",["lco1m",101],{"raw":[0]},{"stats":[1]},[]]]}},'
    '"order":["q-1"],"records":{}}')


def test_version_1_graph_loads_without_size_and_mtime(tmp_path):
    path = tmp_path / "v1.qgraph"
    path.write_bytes(gzip.compress(_V1_GRAPH.encode()))
    g = QuantumGraph.load(path)
    raw, out = g.datasets["r-1"], g.datasets["s-1"]
    assert (raw.data_id, raw.path, raw.checksum, raw.exists) == (
        {"instrument": "lco1m", "exposure": 101}, "raw/all/raw/lco1m/raw_lco1m_101.fits", "ab" * 32, True)
    assert (raw.size, raw.mtime_ns, out.size, out.mtime_ns) == (None, None, None, None)
    assert out.data_id == {"instrument": "lco1m", "exposure": 101} and not out.exists
    assert g.quanta["q-1"].inputs == {"raw": ["r-1"]} and g.quanta["q-1"].outputs == {"stats": ["s-1"]}
    g.save(tmp_path / "v2.qgraph")  # re-saved in the current version, unchanged
    assert QuantumGraph.load(tmp_path / "v2.qgraph").datasets == g.datasets


# -- (c) through Parsl --------------------------------------------------------------------------------
@pytest.mark.both_backends
def test_untouched_inputs_are_not_hashed_and_outputs_are_registered_with_their_stat(tmp_path, monkeypatch):
    monkeypatch.delenv(VERIFY_ENV, raising=False)  # the default: fast
    butler, _ = make_transfer_mode_repo(tmp_path)
    sub, summary = _run(butler, "u/t/clean")
    assert summary.ok and summary.per_task["frameStats"]["succeeded"] == 6
    assert _hashed(sub.run_dir) == []    # 12 raw and 2 refcat reads, none hashed
    outputs = butler.query_datasets("*", "u/t/clean")
    assert len(outputs) == 10
    for ref in outputs:                  # write_at -> manifest -> record_quanta
        assert ref.mtime_ns is not None
        _assert_stat(butler, ref)


def test_fast_mode_trusts_same_size_and_mtime_full_mode_does_not(tmp_path, monkeypatch):
    butler, _ = make_transfer_mode_repo(tmp_path)
    kept, moved = _raw(butler, 101), _raw(butler, 104)     # copy and direct
    _tamper(butler.path(kept), kept.mtime_ns)              # restores the recorded mtime: invisible to fast
    _tamper(butler.path(moved), moved.mtime_ns + 10**9)    # a new mtime: fast hashes it
    monkeypatch.setenv(VERIFY_ENV, "fast")
    sub, summary = _run(butler, "u/t/fast")
    t = summary.per_task
    # 101 is processed from changed bytes: the documented trade-off of fast mode; 104 is caught
    assert (t["frameStats"]["succeeded"], t["frameStats"]["failed"]) == (5, 1)
    (row,) = [r for r in sub.status.rows() if r["state"] == "failed" and r["task"] == "frameStats"]
    assert row["error_type"] == "InputChecksumError" and "104" in row["data_id"]
    hashed = _hashed(sub.run_dir)
    assert _hashed_files(hashed, butler) == {104}          # frameStats 104 and the g band's targetCoverage
    assert len(hashed) == 2 and all("size/mtime differ from the recorded ones" in m for m in hashed)

    monkeypatch.setenv(VERIFY_ENV, "full")
    sub, summary = _run(butler, "u/t/full")
    t = summary.per_task
    assert (t["frameStats"]["succeeded"], t["frameStats"]["failed"]) == (4, 2)
    failed = {r["data_id"] for r in sub.status.rows() if r["state"] == "failed" and r["task"] == "frameStats"}
    assert any("101" in d for d in failed) and any("104" in d for d in failed)
    # every raw hashed (both targetCoverage quanta fail on a raw before they reach the refcat)
    assert _hashed_files(_hashed(sub.run_dir), butler) == set(MODES)

    # An old (version 1) graph in a run directory resumes; with no recorded stat fast mode hashes every raw,
    # so it catches 101 as well.
    monkeypatch.setenv(VERIFY_ENV, "fast")
    site, src = load_site(None)
    started = Submission.start(butler, _plan(butler, "u/t/old"), site, src)
    started.close()
    _as_version_1(started.run_dir / GRAPH_FILE)
    sub = Submission.resume(started.run_dir)
    assert all(n.mtime_ns is None for n in sub.graph.datasets.values())
    summary = sub.run()
    t = summary.per_task
    assert (t["frameStats"]["succeeded"], t["frameStats"]["failed"]) == (4, 2)
    hashed = _hashed(sub.run_dir)
    assert _hashed_files(hashed, butler) == set(MODES) and all("no size/mtime recorded" in m for m in hashed)


# -- (d) an old registry ------------------------------------------------------------------------------
def test_registry_without_the_column_opens_and_works(tmp_path, caplog):
    butler = make_small_repo(tmp_path)
    butler.registry.close()
    old = tmp_path / "old"
    shutil.copytree(butler.root, old)
    con = sqlite3.connect(old / REGISTRY_FILE)
    con.execute("ALTER TABLE dataset_location DROP COLUMN mtime_ns")
    con.commit()
    con.close()

    b = Butler(old)
    with b.registry.engine.connect() as c:
        assert "mtime_ns" in {col["name"] for col in inspect(c).get_columns("dataset_location")}
    raws = b.query_datasets("raw", "raw/all")
    assert len(raws) == 6 and all(r.mtime_ns is None and r.size == b.path(r).stat().st_size for r in raws)
    # new datasets get their mtime; old rows keep meaning "hash it"
    ref = b.put({"a": 1}, DatasetType("note", ("instrument",), "StructuredData"), {"instrument": "lco1m"}, run="notes")
    _assert_stat(b, ref)
    assert b.registry.get_dataset(ref.id) == ref
    (new,) = ingest_raws(b, [write_frame(tmp_path / "f9.fits", lco_header(109))]).ingested
    _assert_stat(b, new)
    graph = _plan(b, "u/t/old-repo")
    assert all(n.mtime_ns is None and n.size is not None for n in graph.datasets.values() if n.dataset_type == "raw"
               and n.id != new.id)
    # what a worker does with such an input in fast mode: hash it
    raw = raws[0]
    with caplog.at_level(logging.INFO, logger=checksum_mod.log.name):
        assert changed_checksum(b.path(raw), raw.checksum, size=raw.size, mtime_ns=raw.mtime_ns) is None
    assert [r.getMessage() for r in caplog.records if "no size/mtime recorded" in r.getMessage()]
    # opening again (column present now) changes nothing
    assert Butler(old).query_datasets("raw", "raw/all", where="exposure = 109")[0] == new
