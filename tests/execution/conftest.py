"""The sites the execution tests run against.

As Parsl runs its own test suite once per config, the core end-to-end tests (a run, a failure then its resume,
a lost worker retried, a killed submit resumed...) take the ``site`` fixture and run twice: on
``site_configs/local.yaml`` and on ``site_configs/slurm-local.yaml`` (pilot jobs on the local single-node SLURM of
``bin/slurm-local``, marked ``slurm``). Tests of local-only behaviour keep the default site.

``failed_runs`` hands out one failing run on the local site (six frames, exposure 101 made to fail), made once per
session for every module that reads it (the run report's timeline, the failure report then its resume).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from testdata import make_small_repo

from openastro_parsl.butler import REGISTRY_SERVER_ENV, Butler
from openastro_parsl.execution import slurm_local
from openastro_parsl.execution.site import SiteConfig, load_site
from openastro_parsl.execution.submit import Submission, Summary
from openastro_parsl.graph.planner import Planner
from openastro_parsl.pipeline.pipeline import load_pipeline

SITE_CONFIGS = Path(__file__).resolve().parents[2] / "site_configs"
SITES = ("local", "slurm-local")
FAULTY = Path(__file__).resolve().parents[1] / "pipelines" / "faulty.yaml"


@pytest.fixture(scope="session")
def slurm():
    """The local single-node SLURM (``bin/slurm-local``), started once per session and left running.

    Returns its environment (SLURM_CONF, OPENASTRO_SLURM_PARTITION, ...), which is also exported for the rest of
    the session so that Parsl's SlurmProvider and the SLURM tools find it. Skips, with the reason, only when SLURM
    cannot be started on this machine (the failed start is not retried for every test).
    """
    try:
        env = slurm_local.start()
    except slurm_local.SlurmUnavailable as e:
        pytest.skip(f"SLURM cannot be started here: {e}")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield env


@pytest.fixture(params=[pytest.param(name, marks=pytest.mark.slurm) if name.startswith("slurm") else name
                        for name in SITES])
def site_path(request) -> Path:
    """``site_configs/<name>.yaml`` for each site in turn; for a SLURM site, SLURM is up (else skipped)."""
    if request.param.startswith("slurm"):
        request.getfixturevalue("slurm")
    return SITE_CONFIGS / f"{request.param}.yaml"


@pytest.fixture
def site(site_path: Path) -> tuple[SiteConfig, str]:
    """The loaded site config and its source, as ``load_site`` gives them, for each site in turn."""
    return load_site(site_path)


@dataclass
class FailedRun:
    """A finished run of tests/pipelines/faulty.yaml over ``make_small_repo(root)`` into ``u/t/run``: five
    frameStats succeed, exposure 101 fails while ``marker`` exists, and what needs it is blocked."""

    root: Path
    butler: Butler
    marker: Path
    sub: Submission
    summary: Summary


def make_failed_run(root: Path, site: tuple[SiteConfig, str] | None = None) -> FailedRun:
    """Make the failing run under ``root`` on ``site`` (default: the local one) and the current registry backend."""
    butler = make_small_repo(root)
    marker = root / "fail-now"
    marker.touch()
    pipeline = load_pipeline(FAULTY, ["frameStats:fail_exposures=[101]", f"frameStats:marker={marker}"])
    graph = Planner(butler, pipeline, inputs=["defaults"], output_run="u/t/run").plan()
    sub = Submission.start(butler, graph, *(site or load_site(None)))
    return FailedRun(root, butler, marker, sub, sub.run())


class FailedRuns:
    """The session's failing local run on SQLite: ``shared()`` for tests that only read it, ``claim()`` for the one
    that resumes it (a later ``shared()`` then makes a fresh one, so no reader ever sees a resumed run)."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._factory = tmp_path_factory
        self._run: FailedRun | None = None

    make = staticmethod(make_failed_run)  # the same run, made afresh (another site or registry backend)

    def shared(self) -> FailedRun:
        if self._run is None:
            with pytest.MonkeyPatch.context() as mp:
                mp.delenv(REGISTRY_SERVER_ENV, raising=False)
                self._run = make_failed_run(self._factory.mktemp("failed-run"))
        return self._run

    def claim(self) -> FailedRun:
        run = self.shared()
        self._run = None
        return run


@pytest.fixture(scope="session")
def failed_runs(tmp_path_factory) -> FailedRuns:
    return FailedRuns(tmp_path_factory)
