"""End-to-end execution through a real Parsl HighThroughputExecutor: on this machine, and (the tests taking the
``site`` fixture) in pilot jobs on the local single-node SLURM too. Those that register or resume run on both
registry backends on this machine; a lost worker's retry and a MemoryError's classification register nothing
another test does not, so they stay on SQLite (time: tests/conftest.py)."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from testdata import QA, make_small_repo

from openastro_parsl.cli.report import main as report_main
from openastro_parsl.cli.report import status_main
from openastro_parsl.execution.site import load_site
from openastro_parsl.execution.submit import Submission
from openastro_parsl.graph.planner import Planner
from openastro_parsl.pipeline.pipeline import load_pipeline

FAULTY = Path(__file__).resolve().parents[1] / "pipelines" / "faulty.yaml"


def _run(butler, spec, overrides=(), output_run="u/t/run", site=None, **kw):
    graph = Planner(butler, load_pipeline(spec, overrides), inputs=["defaults"], output_run=output_run, **kw).plan()
    site, src = site or load_site(None)
    sub = Submission.start(butler, graph, site, src)
    return sub, sub.run()


@pytest.mark.both_backends
def test_pipeline_runs_registers_with_provenance_and_logs(tmp_path, site):
    butler = make_small_repo(tmp_path)
    sub, summary = _run(butler, QA, site=site)
    assert summary.ok
    assert {k: v["succeeded"] for k, v in summary.per_task.items()} == {"frameStats": 6, "fieldQa": 2, "targetCoverage": 2}
    refs = butler.query_datasets("*", "u/t/run")
    assert len(refs) == 10 and butler.verify()[1] == []
    stats = butler.get("frameStats", {"instrument": "lco1m", "exposure": 101}, collections="u/t/run")
    assert stats["shape"] == [32, 32] and stats["noise"] == pytest.approx(5.0, rel=0.2)  # the frames' injected noise
    qa = butler.get("fieldQa", {"field": "demo1", "band": "r"}, collections="u/t/run")
    assert sorted(qa["exposure"]) == [101, 103, 105]
    cov_ref = next(r for r in refs if r.name == "targetCoverage")
    prov = butler.registry.quantum_provenance(cov_ref.id)
    assert prov["task"] == "targetCoverage" and prov["host"] and "numpy" in prov["packages"]
    assert len(prov["inputs"]) == 4  # 3 raws of the band + the refcat
    assert butler.registry.run_inputs("u/t/run") == ["defaults"]
    saved = json.loads((sub.run_dir / "summary.json").read_text())
    assert saved["ok"] and saved["per_task"]["frameStats"]["succeeded"] == 6
    logs = list((sub.run_dir / "logs" / "frameStats").rglob("*.jsonl"))
    assert len(logs) == 6
    rec = json.loads(logs[0].read_text().splitlines()[0])
    assert rec["task"] == "frameStats" and rec["quantum"] and rec["data_id"]["instrument"] == "lco1m"
    on_slurm = site[0].executors[0].provider.kind == "slurm"
    assert all(bool(r["slurm_job_id"]) == on_slurm for r in sub.status.rows())
    assert bool(prov["slurm_job_id"]) == on_slurm


@pytest.mark.both_backends
def test_failure_report_and_resume(tmp_path, site_path, site, registry_backend, failed_runs):
    # On the local site and SQLite, the session's failing run (test_report_timeline.py reads it too), claimed: it is
    # resumed below. Elsewhere the same run, made here.
    if site_path.stem == "local" and registry_backend == "sqlite":
        failed = failed_runs.claim()
    else:
        failed = failed_runs.make(tmp_path, site)
    butler, marker, sub, summary = failed.butler, failed.marker, failed.sub, failed.summary
    assert not summary.ok
    t = summary.per_task
    assert (t["frameStats"]["succeeded"], t["frameStats"]["failed"]) == (5, 1)
    assert t["fieldQa"]["upstream_failed"] == 1 and t["fieldQa"]["succeeded"] == 1
    assert summary.failures_by_kind == {"science": 1, "upstream_failed": 2}  # fieldQa and statsEcho
    # the failed quantum's own log holds its output (python and C level) and the traceback
    out = CliRunner().invoke(report_main, [str(sub.run_dir), "--failed"])
    assert out.exit_code == 0
    assert "ValueError: injected failure for exposure 101" in out.output and "[science]" in out.output
    report = json.loads(CliRunner().invoke(report_main, [str(sub.run_dir), "--json"]).output)
    (failed,) = report["failed"]
    stderr = Path(failed["logs"]["stderr"]).read_text()
    assert "Traceback" in stderr and "stderr from the C level (fd 2)" in stderr
    stdout = Path(failed["logs"]["stdout"]).read_text()
    assert "stdout from python for exposure 101" in stdout and "stdout from the C level (fd 1)" in stdout
    assert failed["logs"]["stderr"].startswith(str(sub.run_dir / "logs" / "frameStats" / "instrument=lco1m_exposure=101"))
    log_out = CliRunner().invoke(report_main, [str(sub.run_dir), "--log", "frameStats", "exposure=101"])
    assert "injected failure" in log_out.output
    html = tmp_path / "r.html"
    CliRunner().invoke(report_main, [str(sub.run_dir), "--html", str(html)])
    assert "injected failure for exposure 101" in html.read_text()
    st = CliRunner().invoke(status_main, [str(sub.run_dir)])
    rows = {ln.split("│")[1].strip(): [c.strip() for c in ln.split("│")[2:-1]]
            for ln in st.output.splitlines() if ln.startswith("│")}
    assert rows["frameStats"] == ["0", "0", "5", "0", "1", "0", "0"]  # pending running succeeded no_work failed upstream skipped
    assert rows["fieldQa"] == ["0", "0", "1", "0", "0", "1", "0"]
    before = {r.id for r in butler.query_datasets("*", "u/t/run")}
    assert len(before) == 5 + 5 + 1 + 2  # 5 stats, 5 echoes, 1 fieldQa, 2 coverage (coverage reads raws)

    marker.unlink()  # the cause is fixed; resume reruns only what did not succeed
    resumed = Submission.resume(sub.run_dir)
    summary2 = resumed.run()
    assert summary2.ok
    after = butler.query_datasets("*", "u/t/run", find_first=False)
    assert len(after) == 6 + 6 + 2 + 2 and before <= {r.id for r in after}  # nothing re-registered, no duplicates
    rows = {r["id"]: r for r in resumed.status.rows()}
    assert sum(r["attempts"] for r in rows.values() if r["task"] == "frameStats") == 7  # 6 first time + 1 rerun


def test_worker_death_is_infrastructure_and_retried(tmp_path, site):
    butler = make_small_repo(tmp_path, n=2)
    marker = tmp_path / "die-once"
    marker.touch()
    sub, summary = _run(butler, f"{FAULTY}#frameStats",
                        ["frameStats:fail_exposures=[100]", f"frameStats:marker={marker}", "frameStats:fault=kill_worker"],
                        site=site)
    assert summary.ok, summary.to_json()
    retries = [d for t, k, d in sub.status.events() if k == "retry"]
    assert len(retries) == 1 and retries[0]["kind"] == "worker_lost"
    attempts = {r["data_id"]: r["attempts"] for r in sub.status.rows()}
    assert sorted(attempts.values()) == [1, 2]


def test_memory_error_is_classified(tmp_path, site):
    butler = make_small_repo(tmp_path, n=1)
    marker = tmp_path / "oom"
    marker.touch()
    sub, summary = _run(butler, f"{FAULTY}#frameStats",
                        ["frameStats:fail_exposures=[100]", f"frameStats:marker={marker}", "frameStats:fault=memory"],
                        site=site)
    assert not summary.ok and summary.failures_by_kind == {"out_of_memory": 1}
    (row,) = list(sub.status.rows())
    assert row["attempts"] == 2 and row["error_type"] == "MemoryError"  # retried once (site retries: 1), then failed


@pytest.mark.both_backends
def test_no_work_is_not_a_failure_and_propagates(tmp_path, site):
    """A task raising NoWorkFound (a frame that did not plate-solve): its per-exposure consumer has no work
    either, the gathering task goes on with the other frames, the run is ok and resume reruns nothing."""
    butler = make_small_repo(tmp_path)
    marker = tmp_path / "armed"
    marker.touch()
    sub, summary = _run(butler, FAULTY, ["frameStats:fail_exposures=[101]", f"frameStats:marker={marker}",
                                         "frameStats:fault=no_work"], site=site)
    assert summary.ok
    t = summary.per_task
    assert (t["frameStats"]["succeeded"], t["frameStats"]["no_work"]) == (5, 1)
    assert (t["statsEcho"]["succeeded"], t["statsEcho"]["no_work"]) == (5, 1)
    assert t["fieldQa"]["succeeded"] == 2 and t["fieldQa"]["failed"] == 0
    qa = butler.get("fieldQa", {"field": "demo1", "band": "r"}, collections="u/t/run")
    assert sorted(qa["exposure"]) == [103, 105]  # 101 found no work
    report = json.loads(CliRunner().invoke(report_main, [str(sub.run_dir), "--json"]).output)
    assert report["no_work"]["frameStats"] == {"nothing to measure on exposure 101": 1}
    (echo_reason,) = report["no_work"]["statsEcho"]
    assert "frameStats" in echo_reason and "exposure': 101" in echo_reason
    n_refs = len(butler.query_datasets("*", "u/t/run"))
    again = Submission.resume(sub.run_dir).run()
    assert again.ok and again.per_task["frameStats"]["no_work"] == 1
    assert len(butler.query_datasets("*", "u/t/run")) == n_refs


@pytest.mark.both_backends
def test_tiny_quanta_travel_in_clusters(tmp_path, site):
    """Quanta far shorter than Parsl's per-task overhead are sent a few at a time once their duration is
    known; each still has its own logs, status row and registered outputs."""
    from openastro_parsl.execution.site import SiteConfig

    butler = make_small_repo(tmp_path, n=60)
    graph = Planner(butler, load_pipeline(str(QA) + "#frames"), inputs=["defaults"], output_run="u/t/tiny").plan()
    config, src = site
    config = SiteConfig.model_validate({**config.model_dump(), "max_in_flight": 4})
    sub = Submission.start(butler, graph, config, src)
    summary = sub.run()
    assert summary.ok and summary.per_task["frameStats"]["succeeded"] == 60
    (end,) = [d for _, kind, d in sub.status.events() if kind == "end"]
    assert end["parsl_tasks"] < 40, end  # 60 quanta in fewer Parsl tasks
    assert len(butler.query_datasets("frameStats", "u/t/tiny")) == 60
    assert len(list((sub.run_dir / "logs" / "frameStats").rglob("*.stdout"))) == 60
