"""Nothing from a name reaches a shell unquoted (issue 12, item 3).

Parsl pastes the run directory (REPO/submit/<output run>/<timestamp>/) unquoted into `bash -c '...'`, the
worker command line, `sbatch PATH` and `#SBATCH --output=PATH`; site values go into `#SBATCH` lines. A path a
shell would interpret is refused before anything is launched, and SLURM values must be plain tokens."""

from __future__ import annotations

import pytest
import yaml
from testdata import QA, make_small_repo

from openastro_parsl.errors import OpenAstroError
from openastro_parsl.execution.site import load_site
from openastro_parsl.execution.submit import Submission
from openastro_parsl.graph.planner import Planner
from openastro_parsl.pipeline.pipeline import load_pipeline
from openastro_parsl.yamlconfig import ConfigError


def _plan_and_run(root, output_run="u/t/run"):
    butler = make_small_repo(root, n=2)
    graph = Planner(butler, load_pipeline(QA), inputs=["defaults"], output_run=output_run).plan()
    site, src = load_site(None)
    return Submission.start(butler, graph, site, src).run()


# `$(>marker)` creates the file `marker` with no space (a space would break the launch before the command ran),
# and survives both Parsl's `bash -c '...'` and the worker launch script; today each of these creates it.
@pytest.mark.parametrize("name", ["a$(>marker)", "a`>marker`", "a'$(>marker)'", "my repo $(>marker)"])
def test_hostile_repository_path_is_refused_before_anything_is_launched(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)  # where the shell would create `marker` (the submit's and workers' cwd)
    with pytest.raises(OpenAstroError, match="holds characters a shell would interpret") as err:
        _plan_and_run(tmp_path / name)
    assert "\n" not in str(err.value)
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith("marker")], "the injected command ran"
    assert not list(tmp_path.rglob("submit_scripts")), "Parsl launched something"


def test_unusual_but_safe_repository_path_runs(tmp_path, monkeypatch):
    """The refusal is narrow: letters of any script and _ . , + @ : = - run through real Parsl."""
    monkeypatch.chdir(tmp_path)
    summary = _plan_and_run(tmp_path / "données_v1.2,run+1@site:a=b")
    assert summary.ok, summary.failures_by_kind


@pytest.mark.parametrize("key, value", [
    ("partition", "debug\n#SBATCH --uid=0"),  # a newline adds a line to the job script
    ("account", "astro;touch x"),
    ("qos", "$(id)"),
    ("constraint", "gpu && touch x"),
])
def test_slurm_values_must_be_plain_tokens(tmp_path, key, value):
    provider = {"kind": "slurm", "partition": "debug", key: value}
    f = tmp_path / "site.yaml"
    f.write_text(yaml.safe_dump({"executors": [{"label": "a", "provider": provider}]}))
    with pytest.raises(ConfigError, match=f"executors.0.provider.{key}: .*pasted unquoted into an #SBATCH line"):
        load_site(f)


def test_slurm_constraint_operators_are_allowed(tmp_path):
    f = tmp_path / "site.yaml"
    f.write_text("executors:\n  - label: a\n    provider: {kind: slurm, partition: 'debug,long', account: my-alloc,"
                 " qos: normal, constraint: '[(knl&flat)*4|haswell]'}\n")
    site, _ = load_site(f)
    assert site.executors[0].provider.constraint == "[(knl&flat)*4|haswell]"
