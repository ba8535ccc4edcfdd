from pathlib import Path

import pytest

from openastro_parsl.pipeline.connections import Connections, Input, Output
from openastro_parsl.pipeline.pipeline import load_pipeline
from openastro_parsl.pipeline.task import PipelineError, PipelineTask, import_task
from openastro_parsl.yamlconfig import ConfigError

QA = Path(__file__).resolve().parents[2] / "pipelines" / "qa.yaml"


def test_load_orders_tasks_and_selects_subsets():
    p = load_pipeline(QA)
    assert [t.label for t in p] == ["frameStats", "fieldQa", "targetCoverage"]
    assert set(p.overall_inputs()) == {"raw"}
    assert [t.label for t in load_pipeline(f"{QA}#frames")] == ["frameStats"]
    assert [t.label for t in load_pipeline(f"{QA}#summary,targetCoverage")] == ["frameStats", "fieldQa", "targetCoverage"]
    with pytest.raises(PipelineError, match="'nope' is neither a subset \\(frames, summary\\) nor a task label"):
        load_pipeline(f"{QA}#nope")


def test_overrides_and_validation():
    p = load_pipeline(QA, ["frameStats:detect_sigma=3.5"])
    assert p.task("frameStats").config.detect_sigma == 3.5
    with pytest.raises(PipelineError, match="-c frameStats:detect_sigma=abc: detect_sigma: .*number.*config fields of frameStats"):
        load_pipeline(QA, ["frameStats:detect_sigma=abc"])
    with pytest.raises(PipelineError, match="detect_sigmaa: unknown key"):
        load_pipeline(QA, ["frameStats:detect_sigmaa=3"])
    with pytest.raises(PipelineError, match="-c calibrate:x=1: no task labelled 'calibrate' in this pipeline; labels: frameStats, fieldQa, targetCoverage"):
        load_pipeline(QA, ["calibrate:x=1"])
    with pytest.raises(PipelineError, match="is not label:key=value"):
        load_pipeline(QA, ["frameStats"])


def test_override_file(tmp_path):
    f = tmp_path / "o.yaml"
    f.write_text("detect_sigma: 7.0\nmin_area: 9\n")
    p = load_pipeline(QA, override_files=[f"frameStats:{f}"])
    assert (p.task("frameStats").config.detect_sigma, p.task("frameStats").config.min_area) == (7.0, 9)
    with pytest.raises(PipelineError, match="does not exist"):
        load_pipeline(QA, override_files=[f"frameStats:{tmp_path / 'missing.yaml'}"])


def test_imports_with_exclude_and_local_refinement(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(f"""
description: derived
imports:
  - location: {QA}
    exclude: [targetCoverage]
tasks:
  fieldQa:
    class: openastro_parsl.tasks.qa.FieldQaTask
    config: {{max_noise_ratio: 5.0}}
""")
    p = load_pipeline(f)
    assert [t.label for t in p] == ["frameStats", "fieldQa"]
    assert p.task("fieldQa").config.max_noise_ratio == 5.0
    assert p.subsets["summary"] == ["frameStats", "fieldQa"]


def test_errors_name_file_key_and_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("tasks:\n  a:\n    class: openastro_parsl.tasks.qa.FrameStatsTask\n    config:\n      detect_sigma: -1\n")
    with pytest.raises(PipelineError, match=f"{f}:5: detect_sigma: .*greater than 0"):
        load_pipeline(f)
    f.write_text("tasks:\n  a:\n    klass: x.Y\n")
    with pytest.raises(ConfigError, match=f"{f}:3: tasks.a.*|{f}:2"):
        load_pipeline(f)
    f.write_text("tasks:\n  a: openastro_parsl.tasks.nope.Task\n")
    with pytest.raises(PipelineError, match=f"{f}:2: task 'a': cannot import module 'openastro_parsl.tasks.nope'"):
        load_pipeline(f)
    f.write_text("tasks:\n  a: openastro_parsl.tasks.qa.FrameStatsTask\nsubsets:\n  s: [a, b]\n")
    with pytest.raises(PipelineError, match=f"{f}:4: subset 's' names unknown task\\(s\\) \\['b'\\]"):
        load_pipeline(f)
    f.write_text("tasks: [\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_pipeline(f)


class _AConn(Connections):
    x = Input("dsX", ("instrument", "exposure"), "StructuredData")
    y = Output("dsY", ("instrument", "exposure"), "StructuredData")


class _BConn(Connections):
    y = Input("dsY", ("instrument", "exposure"), "StructuredData")
    x = Output("dsX", ("instrument", "exposure"), "StructuredData")


class TaskA(PipelineTask):
    dimensions = ("instrument", "exposure")
    Connections = _AConn


class TaskB(PipelineTask):
    dimensions = ("instrument", "exposure")
    Connections = _BConn


def test_cycles_and_double_producers(tmp_path):
    f = tmp_path / "cycle.yaml"
    f.write_text(f"tasks:\n  a: {__name__}.TaskA\n  b: {__name__}.TaskB\n")
    with pytest.raises(PipelineError, match="tasks form a cycle"):
        load_pipeline(f)
    f.write_text(f"tasks:\n  a: {__name__}.TaskA\n  a2: {__name__}.TaskA\n")
    with pytest.raises(PipelineError, match="'dsY' is produced by both 'a' and 'a2'"):
        load_pipeline(f)


def test_connection_renames_through_config(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text(f"tasks:\n  a:\n    class: {__name__}.TaskA\n    config:\n      connections: {{y: dsZ}}\n")
    assert load_pipeline(f).task("a").connections["y"].dataset_type == "dsZ"
    f.write_text(f"tasks:\n  a:\n    class: {__name__}.TaskA\n    config:\n      connections: {{w: dsZ}}\n")
    with pytest.raises(PipelineError, match="renames unknown connection"):
        load_pipeline(f)


def test_import_task_errors():
    with pytest.raises(PipelineError, match="not a PipelineTask"):
        import_task("openastro_parsl.pipeline.task.TaskConfig")
    with pytest.raises(PipelineError, match="has no class 'Nope'"):
        import_task("openastro_parsl.tasks.qa.Nope")
