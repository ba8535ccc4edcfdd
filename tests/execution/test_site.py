from pathlib import Path

import pytest

from openastro_parsl.execution.site import SiteError, load_site, parsl_config
from openastro_parsl.yamlconfig import ConfigError

SITES = Path(__file__).resolve().parents[2] / "site_configs"


def test_default_local_site(tmp_path):
    site, source = load_site(None)
    assert source.endswith("site_configs/local.yaml") and site.executors[0].provider.kind == "local"
    cfg = parsl_config(site, tmp_path)
    (htex,) = cfg.executors
    assert type(htex).__name__ == "HighThroughputExecutor" and type(htex.provider).__name__ == "LocalProvider"
    assert (tmp_path / "parsl").exists()


def test_slurm_site_builds_slurm_provider_and_routes(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("""
executors:
  - label: fast
    provider: {kind: slurm, partition: debug, walltime: "01:00:00", max_blocks: 4, cores_per_node: 8,
               scheduler_options: "#SBATCH --licenses=scratch", worker_init: "source ~/venv/bin/activate"}
    resource_classes: [fast, slow]
    drain_before_walltime_s: 300
  - label: mcmc
    provider: {kind: slurm, partition: long, walltime: "1-00:00:00", account: astro, status_poll_s: 7}
    cores_per_worker: 8
    mem_per_worker: 16
    resource_classes: [mcmc]
retries: 2
""")
    site, _ = load_site(f)
    assert site.route({"resource_class": "mcmc"}) == "mcmc"
    assert site.route({"resource_class": "fast"}) == "fast"
    assert site.route({"resource_class": "other"}) == "fast"  # the default: first executor
    assert site.route({"executor": "mcmc", "resource_class": "fast"}) == "mcmc"
    with pytest.raises(SiteError, match="no executor labelled 'gpu'; executors: fast, mcmc"):
        site.route({"executor": "gpu"})
    assert site.executor("mcmc").provider.walltime_seconds() == 86400
    cfg = parsl_config(site, tmp_path)
    fast, mcmc = cfg.executors
    from parsl.providers import SlurmProvider

    assert isinstance(fast.provider, SlurmProvider) and fast.provider.partition == "debug"
    assert fast.provider.status_polling_interval == 60  # Parsl's own interval unless the site asks sooner
    assert mcmc.provider.status_polling_interval == 7
    assert fast.provider.max_blocks == 4 and "--licenses=scratch" in fast.provider.scheduler_options
    assert fast.drain_period == 3600 - 300
    assert mcmc.provider.account == "astro"


@pytest.mark.parametrize("body, message", [
    ("executors:\n  - label: a\n    provider: {kind: slurm}\n", "a slurm provider needs a partition"),
    ("executors:\n  - label: a\n    provider: {kind: local, walltime: '1h'}\n", "walltime '1h' must look like"),
    ("executors:\n  - label: a\n    max_worker_per_node: 3\n", "executors.0.max_worker_per_node: unknown key"),
    ("executors:\n  - label: a\n  - label: a\n", "executor labels must be unique"),
    ("executors: []\n", "executors"),
])
def test_bad_site_configs_name_file_key_and_line(tmp_path, body, message):
    f = tmp_path / "bad.yaml"
    f.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_site(f)
    assert str(f) in str(err.value) and message in str(err.value)


def test_unknown_key_line_number(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("executors:\n  - label: a\n    provider:\n      kind: local\n      partiton: x\n")
    with pytest.raises(ConfigError, match=f"{f}:5: executors.0.provider.partiton: unknown key"):
        load_site(f)
