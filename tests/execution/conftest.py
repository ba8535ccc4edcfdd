import os
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def workers_import_test_tasks(monkeypatch):
    """Parsl workers are new processes: they find tests/exec_tasks.py through PYTHONPATH."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH", "")])))
