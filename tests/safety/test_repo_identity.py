"""The right repository: a graph runs only against the repository it was planned on, a run folder resumes into
the repository that holds it."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from testdata import QA, make_small_repo

from openastro_parsl.butler import Butler
from openastro_parsl.errors import RepositoryError
from openastro_parsl.execution.site import load_site
from openastro_parsl.execution.submit import Submission
from openastro_parsl.graph.planner import Planner
from openastro_parsl.pipeline.pipeline import load_pipeline

FAULTY = Path(__file__).resolve().parents[1] / "pipelines" / "faulty.yaml"
SUBMIT = [sys.executable, "-m", "openastro_parsl.cli.submit_entry"]


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "submit" not in p.parts and not p.name.startswith("registry.sqlite3")}


@pytest.mark.both_backends
def test_repositories_have_distinct_identities_kept_by_reopening(tmp_path):
    a, b = Butler.create(tmp_path / "a"), Butler.create(tmp_path / "b")
    assert a.repo_id and b.repo_id and a.repo_id != b.repo_id
    assert Butler(tmp_path / "a").repo_id == a.repo_id


@pytest.mark.both_backends
def test_old_repository_gets_an_identity_on_first_open(tmp_path):
    Butler.create(tmp_path / "old")
    cfg_path = tmp_path / "old" / "butler.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    del cfg["uuid"]
    cfg_path.write_text(yaml.safe_dump(cfg))
    first = Butler(tmp_path / "old").repo_id
    assert first and Butler(tmp_path / "old").repo_id == first


@pytest.mark.both_backends
def test_graph_planned_on_a_is_refused_on_b_and_writes_nowhere(tmp_path):
    a = make_small_repo(tmp_path / "A")
    b = make_small_repo(tmp_path / "B")
    graph = Planner(a, load_pipeline(QA), inputs=["defaults"], output_run="u/t/x").plan()
    qgraph = tmp_path / "a.qgraph"
    graph.save(qgraph)
    before_a, before_b = _files(a.root), _files(b.root)
    out = subprocess.run(SUBMIT + ["--qgraph", str(qgraph), "-b", str(b.root)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert str(a.root) in out.stderr and str(b.root) in out.stderr and "plan it again" in out.stderr
    assert _files(a.root) == before_a and _files(b.root) == before_b
    assert not (b.root / "submit").exists() and not (a.root / "submit").exists()
    site, src = load_site(None)
    with pytest.raises(RepositoryError, match="planned on repository"):
        Submission.start(Butler(b.root), graph, site, src)


@pytest.mark.both_backends
def test_graph_runs_in_its_repository_after_the_repository_moved(tmp_path):
    """A moved repository keeps its identity; outputs land in it, not at the path recorded in the graph."""
    a = make_small_repo(tmp_path / "A", n=2)
    graph = Planner(a, load_pipeline(f"{FAULTY}#frameStats"), inputs=["defaults"], output_run="u/t/m").plan()
    moved = tmp_path / "moved"
    shutil.move(str(a.root), moved)
    site, src = load_site(None)
    summary = Submission.start(Butler(moved), graph, site, src).run()
    assert summary.ok
    butler = Butler(moved)
    assert len(butler.query_datasets("frameStats", "u/t/m")) == 2 and butler.verify()[1] == []
    assert not a.root.exists()


def test_resume_in_a_copied_repository_writes_into_the_copy(tmp_path):
    a = make_small_repo(tmp_path / "A")
    marker = tmp_path / "fail-now"
    marker.touch()
    graph = Planner(a, load_pipeline(FAULTY, ["frameStats:fail_exposures=[101]", f"frameStats:marker={marker}"]),
                    inputs=["defaults"], output_run="u/t/run").plan()
    site, src = load_site(None)
    sub = Submission.start(a, graph, site, src)
    assert not sub.run().ok
    copy_root = tmp_path / "copy"
    shutil.copytree(a.root, copy_root, symlinks=True)
    before_files = _files(a.root)
    before_refs = {r.id for r in a.query_datasets("*", "u/t/run")}
    marker.unlink()
    run_dir_in_copy = copy_root / sub.run_dir.relative_to(a.root)
    out = subprocess.run(SUBMIT + ["--resume", str(run_dir_in_copy)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    copy = Butler(copy_root)
    assert len(copy.query_datasets("*", "u/t/run", find_first=False)) == 6 + 6 + 2 + 2
    assert copy.verify()[1] == []
    original = Butler(a.root)
    assert {r.id for r in original.query_datasets("*", "u/t/run", find_first=False)} == before_refs
    assert _files(a.root) == before_files  # not one file written into the original


@pytest.mark.both_backends
def test_a_copy_of_a_repository_whose_registry_is_on_a_server_is_refused(tmp_path, registry_backend):
    """``cp -r`` copies butler.yaml (identity, database URL) but not a PostgreSQL database: the copy would share
    it and register files only it holds. An SQLite registry travels with the directory, so its copy is a repository."""
    a = make_small_repo(tmp_path / "A", n=2)
    before = {r.id for r in a.query_datasets("*", "defaults", find_first=False)}
    copy_root = tmp_path / "copy"
    shutil.copytree(a.root, copy_root, symlinks=True)
    if registry_backend == "sqlite":
        assert {r.id for r in Butler(copy_root).query_datasets("*", "defaults", find_first=False)} == before
        return
    with pytest.raises(RepositoryError, match=rf"{copy_root} shares its registry .* with the repository at "
                                              rf"{a.root}, of which it is a copy"):
        Butler(copy_root)
    reopened = Butler(a.root)  # the original is untouched, and still its registry's owner
    assert {r.id for r in reopened.query_datasets("*", "defaults", find_first=False)} == before
    assert reopened.registry.meta_value("repository_root") == str(a.root)


@pytest.mark.both_backends
def test_a_moved_repository_on_a_server_takes_its_registry_along_and_a_copy_of_it_is_then_refused(
        tmp_path, registry_backend):
    a = make_small_repo(tmp_path / "A", n=2)
    moved = tmp_path / "moved"
    shutil.move(str(a.root), moved)
    butler = Butler(moved)  # the directory the registry named is gone: moved, not copied
    assert len(butler.query_datasets("raw", "defaults")) == 2
    link = tmp_path / "link"
    link.symlink_to(moved)
    assert Butler(link).repo_id == butler.repo_id  # one directory by another path
    if registry_backend == "postgresql":
        assert butler.registry.meta_value("repository_root") == str(moved)
        shutil.copytree(moved, tmp_path / "copy", symlinks=True)
        with pytest.raises(RepositoryError, match=f"with the repository at {moved}, of which it is a copy"):
            Butler(tmp_path / "copy")
