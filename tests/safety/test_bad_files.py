"""A missing or garbage registry, and a truncated or foreign quantum graph, are one clear line naming the file.

Before issue 12 these were sqlite3 DatabaseError / KeyError tracebacks (and an empty registry file was
silently taken for a new database).
"""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys

import pytest
from testdata import QA, make_small_repo

from openastro_parsl.butler import Butler
from openastro_parsl.errors import OpenAstroError, RepositoryError
from openastro_parsl.graph.planner import Planner
from openastro_parsl.graph.quantum_graph import GraphFormatError, QuantumGraph
from openastro_parsl.pipeline.pipeline import load_pipeline


def cli(module: str, *args) -> subprocess.CompletedProcess:
    """Run a console command as a user would (a new process, its real stderr)."""
    code = f"from openastro_parsl.cli.{module} import main; main()"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)


def assert_one_clear_line(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: ")
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


# -- the registry ---------------------------------------------------------------------------------------------
def _random(n: int) -> bytes:
    return random.Random(12).randbytes(n)


DAMAGE = {
    "missing": (lambda f, good: f.unlink(), "missing"),
    "empty": (lambda f, good: f.write_bytes(b""), "empty (0 bytes)"),
    "random bytes": (lambda f, good: f.write_bytes(_random(len(good))), "not an SQLite database"),
    "text file": (lambda f, good: f.write_text("name,value\nalpha,1\n"), "not an SQLite database"),
    "truncated": (lambda f, good: f.write_bytes(good[: len(good) // 3]), "truncated"),
    "garbage after the header": (lambda f, good: f.write_bytes(good[:100] + _random(len(good) - 100)), "damaged"),
}


@pytest.fixture
def repo(butler):
    butler.registry.register_run("u/t/qa")
    butler.registry.close()
    return butler.root


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_registry_is_a_clear_error(repo, kind):
    db = repo / "registry.sqlite3"
    damage, says = DAMAGE[kind]
    damage(db, db.read_bytes())
    with pytest.raises(RepositoryError) as info:
        Butler(repo).query_collections()
    msg = str(info.value)
    assert str(db) in msg and says in msg and "\n" not in msg
    if kind == "missing":
        assert not db.exists()  # opening never makes an empty registry in its place
    if kind == "empty":
        assert db.stat().st_size == 0


@pytest.mark.parametrize("kind", ["missing", "random bytes", "truncated", "garbage after the header"])
def test_damaged_registry_through_the_cli(repo, kind):
    db = repo / "registry.sqlite3"
    damage, says = DAMAGE[kind]
    damage(db, db.read_bytes())
    assert_one_clear_line(cli("butler", "query-collections", repo), str(db), says)
    if kind == "random bytes":
        assert_one_clear_line(cli("plan", "-b", repo, "-p", QA, "-i", "raw/all", "-o", "u/t/x"), str(db), says)


# -- the quantum graph ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_graph(tmp_path_factory) -> bytes:
    tmp = tmp_path_factory.mktemp("graph")
    butler = make_small_repo(tmp)
    path = tmp / "good.qgraph"
    Planner(butler, load_pipeline(QA), inputs=["defaults"], output_run="u/t/qa").plan().save(path)
    return path.read_bytes()


def _doc(good: bytes) -> dict:
    return json.loads(gzip.decompress(good))


def _regzip(doc) -> bytes:
    return gzip.compress(json.dumps(doc).encode())


def _drop(key):
    def edit(good):
        doc = _doc(good)
        del doc[key]
        return _regzip(doc)
    return edit


def _flip_middle(good: bytes) -> bytes:
    data = bytearray(good)
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0x5A
    return bytes(data)


GRAPHS = {
    "empty": lambda good: b"",
    "truncated gzip": lambda good: good[: len(good) // 2],
    "gzip header only": lambda good: good[:10],
    "corrupt gzip": _flip_middle,
    "random bytes": lambda good: _random(5000),
    "plain JSON": lambda good: gzip.decompress(good),
    "gzip of other JSON": lambda good: _regzip({"type": "FeatureCollection", "features": []}),
    "gzip of a JSON list": lambda good: _regzip([1, 2, 3]),
    "gzip of text": lambda good: gzip.compress(b"hello world\n"),
    "no quanta": _drop("quanta"),
    "no header": _drop("header"),
    "rows of the wrong shape": lambda good: _regzip({**_doc(good), "quanta": {"frameStats": {"dims": [],
                                                                                             "rows": [[1]]}}}),
    "dataset index out of range": lambda good: _regzip({**_doc(good), "datasets": {}}),
}


@pytest.mark.parametrize("kind", list(GRAPHS))
def test_damaged_graph_is_a_clear_error(good_graph, tmp_path, kind):
    path = tmp_path / "g.qgraph"
    path.write_bytes(GRAPHS[kind](good_graph))
    with pytest.raises(GraphFormatError) as info:
        QuantumGraph.load(path)
    assert isinstance(info.value, OpenAstroError)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("kind", ["truncated gzip", "gzip of other JSON", "no quanta", "empty"])
def test_damaged_graph_through_submit(good_graph, tmp_path, kind):
    path = tmp_path / "g.qgraph"
    path.write_bytes(GRAPHS[kind](good_graph))
    assert_one_clear_line(cli("submit", "--qgraph", path), str(path))
