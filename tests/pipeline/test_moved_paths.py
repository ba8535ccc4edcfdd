"""Task classes named by the paths of the old flat ``openastro_parsl.tasks`` layout still load
(``openastro_parsl.pipeline.moved``): in pipeline YAML, in pickled state, and in a quantum graph saved before the
move, which runs through Parsl HTEX and resumes."""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import json
import pickle
import sys
from pathlib import Path

import pytest

from openastro_parsl.execution.site import load_site
from openastro_parsl.execution.submit import GRAPH_FILE, Submission
from openastro_parsl.graph.planner import Planner
from openastro_parsl.graph.quantum_graph import QuantumGraph
from openastro_parsl.pipeline.moved import MOVED_MODULES, current_path, old_module_names
from openastro_parsl.pipeline.pipeline import load_pipeline
from openastro_parsl.pipeline.task import import_task

ROOT = Path(__file__).resolve().parents[2]
T = "openastro_parsl.tasks"

# Every task class of the flat layout (before issue 13), by the path pipelines and saved graphs recorded.
OLD_TASK_PATHS = {
    "plateSolve": f"{T}.astrometry.PlateSolveTask",
    "calibrate": f"{T}.photometry.CalibrateTask",
    "zeropointHistory": f"{T}.photometry.ZeropointHistoryTask",
    "makeRefGrid": f"{T}.reproject.MakeRefGridTask",
    "warp": f"{T}.reproject.WarpTask",
    "normalize": f"{T}.normalize.NormalizeTask",
    "coadd": f"{T}.coadd.CoaddTask",
    "makeLightcurve": f"{T}.lightcurve.LightcurveTask",
    "periodSearch": f"{T}.periodogram.PeriodSearchTask",
    "transitSearch": f"{T}.transit.TransitSearchTask",
    "transitTiming": f"{T}.transit.TransitTimingTask",
    "ttvFit": f"{T}.ttv.TtvFitTask",
    "diffim": f"{T}.diffim.DiffimTask",
    "rbClassify": f"{T}.realbogus.RealBogusTask",
    "alerts": f"{T}.alerts.AlertsTask",
    "rbTrainingSet": f"{T}.realbogus_training.TrainingSetTask",
    "rbTrain": f"{T}.realbogus_training.TrainTask",
    "rbEvaluate": f"{T}.realbogus_training.EvaluateTask",
    "frameStats": f"{T}.qa.FrameStatsTask",
    "fieldQa": f"{T}.qa.FieldQaTask",
    "targetCoverage": f"{T}.qa.TargetCoverageTask",
}


@pytest.mark.parametrize("label,old", sorted(OLD_TASK_PATHS.items()))
def test_every_old_task_path_imports_the_task(label, old):
    cls = import_task(old)
    assert cls.__name__ == old.rsplit(".", 1)[1]
    assert cls.__module__.startswith(T + ".")
    assert import_task(current_path(old)) is cls


def test_the_rename_table_is_not_stale():
    """Each old module is really gone (else the table would shadow it) and each new one exports its classes."""
    for old, new in MOVED_MODULES.items():
        assert importlib.util.find_spec(old) is None, f"{old} still exists: drop it from MOVED_MODULES or delete it"
        importlib.import_module(new)
    assert current_path(f"{T}.qa.FrameStatsTask") == f"{T}.qa.FrameStatsTask"
    assert current_path(f"{T}.reproject.WarpTask") == f"{T}.image.reproject.WarpTask"


def test_pipeline_yaml_with_old_class_paths(tmp_path):
    """A pipeline file written for the flat layout loads, with the same classes and configs as the shipped ones."""
    old = tmp_path / "old.yaml"
    isr_fed = "    config:\n      connections: {raw: [postIsrImage, raw]}\n"  # as the shipped image.yaml reads them
    old.write_text("tasks:\n" + "".join(f"  {label}:\n    class: {path}\n"
                                        + (isr_fed if label in ("plateSolve", "calibrate") else "")
                                        for label, path in OLD_TASK_PATHS.items())
                   + "  templateCoadd:\n    class: openastro_parsl.tasks.coadd.CoaddTask\n    config:\n"
                     "      mjd_max: 61120.0\n      connections: {coadd: templateCoadd, coverage: templateCoverage}\n")
    loaded = {t.label: t for t in load_pipeline(old)}
    shipped = {t.label: t for name in ("openastro.yaml", "train_realbogus.yaml", "qa.yaml")
               for t in load_pipeline(ROOT / "pipelines" / name)}
    assert set(loaded) <= set(shipped) | {"ttvFit"}
    for label, t in loaded.items():
        assert t.task_class is shipped[label].task_class, label
        assert t.config_hash == shipped[label].config_hash, label
        assert t.class_path == OLD_TASK_PATHS.get(label, f"{T}.coadd.CoaddTask")  # recorded as written


def test_state_pickled_under_old_module_names_loads():
    """A TTV sampler checkpoint written before the move names ``tasks.ttv_model`` functions."""
    from openastro_parsl.tasks.lightcurve import ttv_model

    blob = pickle.dumps(ttv_model.active_loglike, protocol=0)  # text opcodes: names can be edited in place
    assert b"openastro_parsl.tasks.lightcurve.ttv_model" in blob
    old = blob.replace(b"openastro_parsl.tasks.lightcurve.ttv_model", b"openastro_parsl.tasks.ttv_model")
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(old)
    with old_module_names():
        assert pickle.loads(old) is ttv_model.active_loglike
    assert f"{T}.ttv_model" not in sys.modules


def _rewrite_class_paths(path: Path, paths: dict[str, str]) -> None:
    """Make a saved graph look as if planned before the move: its tasks' class paths the old ones."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        doc = json.load(f)
    for label, info in doc["tasks"].items():
        info["class_path"] = paths.get(label, info["class_path"])  # tasks added since the move keep theirs
    path.write_bytes(gzip.compress(json.dumps(doc).encode()))


def test_graph_saved_with_old_class_paths_runs_and_resumes(demo, tmp_path):
    """The image branch over three frames of one camera, planned now and saved with the old class paths: one frame's
    raw is gone during the first run (its quanta fail, the rest waits), and ``--resume`` finishes the graph, every
    quantum loading its task through the old path on a Parsl worker."""
    truth = demo.truth
    by = {}
    for e in truth["exposures"]:
        by.setdefault((e["instrument"], e["band"], e["field"]), []).append(e["exposure"])
    (inst, band, field), exps = min(((k, v) for k, v in by.items() if len(v) >= 3), key=lambda kv: kv[0])
    exps = sorted(exps)[:3]
    where = f"instrument = '{inst}' AND exposure IN ({', '.join(map(str, exps))})"
    pipeline = load_pipeline(f"{ROOT / 'pipelines' / 'image.yaml'}#image")
    graph = Planner(demo.butler, pipeline, inputs=["demo/defaults"], output_run="u/test/moved-paths",
                    where=where).plan()
    saved = tmp_path / "before-the-move.qgraph"
    graph.save(saved)
    _rewrite_class_paths(saved, OLD_TASK_PATHS)
    old_graph = QuantumGraph.load(saved)
    assert {t.class_path for t in old_graph.tasks.values()} >= {f"{T}.reproject.WarpTask", f"{T}.coadd.CoaddTask",
                                                                 f"{T}.normalize.NormalizeTask"}

    raw = next(d for d in old_graph.datasets.values() if d.dataset_type == "raw" and d.data_id["exposure"] == exps[0])
    raw_path = Path(raw.path) if Path(raw.path).is_absolute() else demo.butler.root / raw.path
    away = raw_path.with_name(raw_path.name + ".away")
    site, src = load_site(None)
    raw_path.rename(away)
    try:
        sub = Submission.start(demo.butler, old_graph, site, src)
        first = sub.run()
    finally:
        away.rename(raw_path)
    assert not first.ok
    assert first.per_task["plateSolve"]["failed"] == 1 and first.per_task["plateSolve"]["succeeded"] == 2
    assert first.per_task["coadd"]["upstream_failed"] == 1

    again = Submission.resume(sub.run_dir).run()
    assert again.ok, [(r["task"], r["message"]) for r in Submission.resume(sub.run_dir).status.rows()
                      if r["state"] not in ("succeeded", "no_work")]
    assert {t.class_path for t in QuantumGraph.load(sub.run_dir / GRAPH_FILE).tasks.values()} \
        == {OLD_TASK_PATHS.get(label, t.class_path) for label, t in graph.tasks.items()}
    assert again.per_task["coadd"]["succeeded"] == 1 and again.per_task["warp"]["succeeded"] + \
        again.per_task["warp"].get("no_work", 0) == 3
    assert demo.butler.get("coadd", {"field": field, "band": band}, collections="u/test/moved-paths") is not None
    assert demo.butler.verify()[1] == []
