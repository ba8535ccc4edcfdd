"""Each framework subpackage names its public API in ``__all__``; names load lazily, so workers stay light."""

import importlib
import subprocess
import sys

import pytest

PACKAGES = ["registry", "datastore", "pipeline", "graph", "execution", "ingest", "astro", "tasks.astrometry",
            "tasks.calibration", "tasks.image", "tasks.lightcurve", "tasks.photometry", "tasks.transient"]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_name_resolves(name):
    package = importlib.import_module(f"openastro_parsl.{name}")
    assert package.__all__ and len(set(package.__all__)) == len(package.__all__)
    for attr in package.__all__:
        value = getattr(package, attr)
        assert getattr(value, "__module__", package.__name__).startswith("openastro_parsl."), attr
    with pytest.raises(AttributeError, match=f"module 'openastro_parsl.{name}' has no attribute 'nope'"):
        _ = package.nope


def test_a_name_that_is_also_its_module_s_stays_the_name_after_the_module_is_imported():
    """``tasks.calibration.combine`` is a function in ``combine.py``: importing the submodule (as ``masters`` does)
    must not turn the package's name into the module, which only an eager binding prevents."""
    code = ("import importlib, pkgutil, types, openastro_parsl as o\n"
            "bad = []\n"
            f"for name in {PACKAGES!r}:\n"
            "    p = importlib.import_module('openastro_parsl.' + name)\n"
            "    for sub in pkgutil.iter_modules(p.__path__):\n"
            "        importlib.import_module(p.__name__ + '.' + sub.name)\n"
            "    bad += [p.__name__ + '.' + a for a in p.__all__ if isinstance(getattr(p, a), types.ModuleType)]\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_task_api_is_one_import():
    namespace: dict = {}
    exec("from openastro_parsl.pipeline import *", namespace)
    from openastro_parsl.pipeline.task import PipelineTask

    assert namespace["PipelineTask"] is PipelineTask
    assert {"Connections", "Input", "Output", "PrerequisiteInput", "TaskConfig", "NoWorkFound"} <= set(namespace)


def test_a_worker_importing_the_runner_does_not_load_the_submit_side():
    code = ("import sys, openastro_parsl.execution.runner, openastro_parsl.pipeline.task, openastro_parsl.datastore;"
            "print(sorted(m for m in ('openastro_parsl.execution.submit', 'openastro_parsl.graph.planner', "
            "'openastro_parsl.pipeline.pipeline', 'sqlalchemy', 'parsl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
