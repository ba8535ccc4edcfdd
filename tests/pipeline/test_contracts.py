"""Task contracts check themselves when a class is defined; NoWorkFound is an outcome, not a user error."""

import importlib
import json
import pkgutil

import numpy as np
import pytest

import openastro_parsl
import openastro_parsl.tasks
from openastro_parsl.errors import OpenAstroError
from openastro_parsl.pipeline import Connections, Input, NoWorkFound, Output, PipelineError, PipelineTask, TaskConfig
from openastro_parsl.pipeline.pipeline import load_pipeline

EXP = ("instrument", "exposure")


def _all_task_classes(package) -> set[type]:
    found = set()
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name.endswith(".__main__"):  # a command-line entry point, not a module to import
            continue
        for value in vars(importlib.import_module(info.name)).values():
            if isinstance(value, type) and issubclass(value, PipelineTask) and value is not PipelineTask:
                found.add(value)
    return found


def test_every_shipped_and_toy_task_declares_cleanly():
    """Importing them runs every check; they must all pass (and be many, so the walk found them)."""
    from openastro_parsl.testing import toy_tasks

    shipped = _all_task_classes(openastro_parsl.tasks)
    assert len(shipped) >= 20
    for cls in shipped | {getattr(toy_tasks, n) for n in toy_tasks.__all__ if n.endswith("Task")}:
        assert cls.Connections.all(), cls


@pytest.mark.parametrize("body, message", [
    ('raw = Input("raw", "exposure", "RawImage")',
     r"Bad\.raw: dimensions 'exposure' is a string; write a tuple, e\.g\. \('exposure',\)"),
    ('raws = Input("raw", EXP, "RawImage", minimum=2)', r"Bad\.raws: minimum=2 needs multiple=True"),
    ('raws = Input("raw", EXP, "RawImage", multiple=True, minimum=-1)', r"Bad\.raws: minimum=-1 is negative"),
    ('raw = Input("raw", ("exposure", "exposure"), "RawImage")', r"Bad\.raw: .*name a dimension twice"),
    ('raw = Input("raw", EXP, "Rawimage")', r"Bad\.raw: unknown storage class 'Rawimage'; known: Image, "),
    ('raw = Input("", EXP, "RawImage")', r"Bad\.raw: dataset type must be a non-empty string"),
    ('raw = Input("raw", EXP, "RawImage")\n    out = Output("raw", EXP, "RawImage")',
     r"Bad: output 'out' writes 'raw', which input 'raw' reads"),
    ('a = Output("x", EXP, "Table")\n    b = Output("x", EXP, "Table")', r"Bad: outputs 'a' and 'b' both write 'x'"),
])
def test_connections_refuse_bad_declarations(body, message):
    with pytest.raises(PipelineError, match=message):
        exec(f"class Bad(Connections):\n    {body}\n", {"Connections": Connections, "Input": Input,
                                                      "Output": Output, "EXP": EXP})


def test_attributes_that_are_not_connections_are_fine():
    class Conns(Connections):
        raw = Input("raw", EXP, "RawImage")
        note = "a plain attribute"

        def helper(self):
            return 1

    assert list(Conns.all()) == ["raw"]


class _Conns(Connections):
    raw = Input("raw", EXP, "RawImage")
    stats = Output("frameStats", EXP, "StructuredData")


def _task(**attrs):
    return type("Bad", (PipelineTask,), {"Connections": _Conns, "dimensions": EXP, **attrs})


def _run_raw(self, raw):
    return {}


@pytest.mark.parametrize("attrs, message", [
    ({"dimensions": "exposure"}, r"Bad\.dimensions is the string 'exposure'; write a tuple"),
    ({"dimensions": ("exposure", "exposure")}, r"Bad\.dimensions .* name a dimension twice"),
    ({"Config": dict}, r"Bad\.Config must be a subclass of TaskConfig"),
    ({"Connections": object}, r"Bad\.Connections must be a subclass of Connections"),
    ({"resources": {"cores": 2}}, r"Bad\.resources must be a Resources"),
    ({"run": lambda self, raws: {}}, r"Bad\.run has no parameter for its input connection 'raw'"),
    ({"run": lambda self, raw, band: {}}, r"Bad\.run requires 'band', which is neither one of its input "
                                          r"connections \(raw\) nor one of data_id, data_ids, records"),
])
def test_tasks_refuse_bad_declarations(attrs, message):
    with pytest.raises(PipelineError, match=message):
        _task(**attrs)


def test_run_may_take_extras_defaults_and_kwargs():
    _task(run=_run_raw)
    _task(run=lambda self, raw, data_id, records=None, mode="fast": {})
    _task(run=lambda self, **inputs: {})


def test_a_connection_named_like_a_runner_keyword_is_refused():
    class Conns(Connections):
        data_id = Input("raw", EXP, "RawImage")

    with pytest.raises(PipelineError, match="Bad: connection 'data_id' is named like the runner's own keyword"):
        type("Bad", (PipelineTask,), {"Connections": Conns, "dimensions": EXP})


class RenameTask(PipelineTask):
    dimensions = EXP
    Connections = _Conns

    def run(self, raw):
        return {"stats": {}}


def test_a_rename_that_makes_an_output_an_input_is_refused(tmp_path):
    with pytest.raises(PipelineError, match="output 'stats' writes 'raw', which input 'raw' reads"):
        RenameTask.connections(TaskConfig(connections={"stats": "raw"}))
    f = tmp_path / "p.yaml"
    f.write_text(f"tasks:\n  a:\n    class: {__name__}.RenameTask\n    config:\n      connections: {{stats: raw}}\n")
    with pytest.raises(PipelineError, match=f"{f}:3: task 'a': .*output 'stats' writes 'raw'"):
        load_pipeline(f)


def test_no_work_found_is_an_outcome_not_a_user_error(tmp_path):
    """The CLIs print OpenAstroError as a user's mistake; NoWorkFound never is one. The runner still ends the
    quantum no_work (and writes nothing), and a quantum that works writes its outputs."""
    from openastro_parsl.datastore.formatters import formatter_named
    from openastro_parsl.datastore.image import Image
    from openastro_parsl.execution.runner import run_quantum

    assert not issubclass(NoWorkFound, OpenAstroError) and issubclass(NoWorkFound, Exception)
    formatter_named("fits-image").write(Image(np.random.default_rng(1).normal(100, 5, (64, 64))), tmp_path / "raw.fits")
    marker = tmp_path / "armed"
    marker.touch()

    def payload(name, exposure):
        return {
            "quantum_id": name, "task": "frameStats", "data_id": {"instrument": "i", "exposure": exposure},
            "class_path": "openastro_parsl.testing.toy_tasks.FaultyStatsTask",
            "config": {"fail_exposures": [1], "fault": "no_work", "marker": str(marker)},
            "datastore_root": str(tmp_path), "records": {},
            "logs": {k: str(tmp_path / "logs" / f"{name}.{k}") for k in ("stdout", "stderr", "jsonl")},
            "inputs": {"raw": {"multiple": False, "datasets": [
                {"path": "raw.fits", "formatter": "fits-image", "dataset_type": "raw", "data_id": {}}]}},
            "outputs": {"stats": {"id": "x", "path": f"out/{name}.json", "formatter": "json",
                                  "dataset_type": "frameStats"}},
        }

    nothing = run_quantum(payload("q1", 1))
    assert nothing["ok"] and nothing["error"] is None and nothing["outputs"] == []
    assert nothing["no_work"] == "nothing to measure on exposure 1"
    done = run_quantum(payload("q2", 2))
    assert done["ok"] and done["error"] is None and not done.get("no_work")
    assert json.loads((tmp_path / "out" / "q2.json").read_text())["shape"] == [64, 64]
