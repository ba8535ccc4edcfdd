"""The same plan made in two processes is the same graph: quanta, their order and every gathered input list
(string hashing differs per process, so nothing may depend on set order)."""

import gzip
import json
import os
import subprocess
import sys

import pytest
from testdata import QA, make_small_repo


def _plan(repo, path, seed):
    env = {**os.environ, "PYTHONHASHSEED": str(seed)}
    subprocess.run([sys.executable, "-c", "from openastro_parsl.cli.plan import main; main()",
                    "-b", str(repo), "-p", str(QA), "-i", "defaults",
                    "-o", "u/t/det", "--save-qgraph", str(path)], env=env, check=True, capture_output=True)
    doc = json.load(gzip.open(path))
    for key in ("created", "plan_seconds", "saved"):
        doc["header"].pop(key, None)
    doc.pop("saved", None)
    return doc


@pytest.mark.both_backends
def test_plans_in_two_processes_are_identical(tmp_path):
    butler = make_small_repo(tmp_path, n=12)
    first = _plan(butler.root, tmp_path / "a.qgraph", 1)
    second = _plan(butler.root, tmp_path / "b.qgraph", 2)
    assert json.dumps(first) == json.dumps(second)
