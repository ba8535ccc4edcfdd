"""The sites the execution tests run against.

As Parsl runs its own test suite once per config, the core end-to-end tests (a run, a failure then its resume,
a lost worker retried, a killed submit resumed...) take the ``site`` fixture and run twice: on
``site_configs/local.yaml`` and on ``site_configs/slurm-local.yaml`` (pilot jobs on the local single-node SLURM of
``bin/slurm-local``, marked ``slurm``). Tests of local-only behaviour keep the default site.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from openastro_parsl.execution import slurm_local
from openastro_parsl.execution.site import SiteConfig, load_site

SITE_CONFIGS = Path(__file__).resolve().parents[2] / "site_configs"
SITES = ("local", "slurm-local")


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
