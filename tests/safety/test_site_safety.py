"""The site on a shared machine (issue 12, items 8 and 6): the interchange listens only where the workers need
it, Parsl's encrypted channel works, and a worker bigger than a node is refused at pre-flight."""

from __future__ import annotations

import ipaddress
import os

import psutil
import pytest
import yaml
from testdata import QA, make_small_repo

from openastro_parsl.execution import slurm_local
from openastro_parsl.execution.preflight import PreflightError, check_fits, preflight
from openastro_parsl.execution.site import SiteError, load_site, parsl_config
from openastro_parsl.execution.submit import Submission
from openastro_parsl.graph.planner import Planner
from openastro_parsl.pipeline.pipeline import load_pipeline
from openastro_parsl.yamlconfig import ConfigError


def site_file(tmp_path, executor: dict, name="site.yaml"):
    f = tmp_path / name
    f.write_text(yaml.safe_dump({"executors": [{"label": "x", "resource_classes": ["fast", "slow", "mcmc"],
                                                **executor}]}))
    return f


def _listening() -> set[str]:
    """Addresses this process and its children (the interchange, the worker pools) listen on, IPv4-mapped IPv6
    shown as IPv4."""
    me = psutil.Process()
    out = set()
    for proc in [me, *me.children(recursive=True)]:
        try:
            conns = proc.net_connections("tcp")
            ips = [ipaddress.ip_address(c.laddr.ip) for c in conns if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
        out |= {str(getattr(ip, "ipv4_mapped", None) or ip) for ip in ips}
    return out


@pytest.mark.parametrize("encrypted", [False, True])
def test_local_run_listens_on_loopback_only_and_can_encrypt(tmp_path, encrypted):
    butler = make_small_repo(tmp_path, n=2)
    site, src = load_site(site_file(tmp_path, {"provider": {"kind": "local"}, "encrypted": encrypted}))
    graph = Planner(butler, load_pipeline(QA), inputs=["defaults"], output_run="u/t/run").plan()
    seen: set[str] = set()
    sub = Submission.start(butler, graph, site, src, progress=lambda counts, total: seen.update(_listening()))
    summary = sub.run()
    assert summary.ok, summary.failures_by_kind
    assert seen == {"127.0.0.1"}, f"the run listened on {seen}"
    certs = list((sub.run_dir / "parsl").rglob("certificates"))
    assert bool(certs) == encrypted  # Parsl made CurveZMQ keys (and used them) only when asked


def test_slurm_address_comes_from_the_site(tmp_path):
    slurm = {"kind": "slurm", "partition": "debug"}
    site, _ = load_site(site_file(tmp_path, {"provider": slurm, "interface": "lo", "encrypted": True}))
    (htex,) = parsl_config(site, tmp_path / "a").executors
    assert (htex.address, htex.loopback_address, htex.encrypted) == ("127.0.0.1", "127.0.0.1", True)
    site, _ = load_site(site_file(tmp_path, {"provider": slurm, "address": "localhost"}))
    assert parsl_config(site, tmp_path / "b").executors[0].address == "127.0.0.1"
    site, _ = load_site(site_file(tmp_path, {"provider": slurm}))
    assert parsl_config(site, tmp_path / "c").executors[0].address  # this host's name, never all interfaces
    site, _ = load_site(site_file(tmp_path, {"provider": slurm, "interface": "nope0"}))
    with pytest.raises(SiteError, match="executor 'x': cannot find the interface 'nope0'"):
        parsl_config(site, tmp_path / "d")


@pytest.mark.parametrize("executor, message", [
    ({"address": "10.0.0.1", "interface": "ib0"}, "give address or interface, not both"),
    ({"address": "$(id)"}, "executors.0.address: .*must be a plain host name, IP address or interface name"),
    ({"interface": "ib0;id"}, "executors.0.interface: .*must be a plain host name"),
])
def test_bad_address_keys(tmp_path, executor, message):
    with pytest.raises(ConfigError, match=message):
        load_site(site_file(tmp_path, executor))


def test_local_worker_larger_than_this_machine_is_refused(tmp_path):
    cores = os.cpu_count()
    f = site_file(tmp_path, {"provider": {"kind": "local"}, "cores_per_worker": cores + 1})
    site, src = load_site(f)
    with pytest.raises(PreflightError) as err:
        preflight(site, src)
    (line,) = str(err.value).splitlines()[1:]
    assert f"executor 'x': cores_per_worker {cores + 1} is more than the {cores} cores of this machine" in line
    site, src = load_site(site_file(tmp_path, {"provider": {"kind": "local"}, "mem_per_worker": 100000}))
    with pytest.raises(PreflightError, match=r"executor 'x': mem_per_worker 100000 GB is more than the [\d.]+ GB"):
        check_fits(site, src)
    site, src = load_site(site_file(tmp_path, {"provider": {"kind": "local"}, "mem_per_worker": 0.5}))
    preflight(site, src)  # fits: nothing to say


def test_slurm_worker_larger_than_the_given_node_is_refused(tmp_path):
    provider = {"kind": "slurm", "partition": "debug", "cores_per_node": 8, "mem_per_node": 32}
    site, src = load_site(site_file(tmp_path, {"provider": provider, "cores_per_worker": 16, "mem_per_worker": 40}))
    with pytest.raises(PreflightError) as err:
        check_fits(site, src)
    assert str(err.value).splitlines()[1:] == [
        f"  {src}: executor 'x': cores_per_worker 16 is more than the 8 cores of a node of partition 'debug': "
        "no worker could start",
        f"  {src}: executor 'x': mem_per_worker 40 GB is more than the 32.0 GB of a node of partition 'debug': "
        "no worker could start"]


@pytest.mark.slurm
def test_slurm_worker_larger_than_the_partitions_nodes_is_refused(tmp_path, monkeypatch):
    """Without cores_per_node, the node is what sinfo says (bin/slurm-local: this machine's cores)."""
    try:
        env = slurm_local.start()
    except slurm_local.SlurmUnavailable as e:
        pytest.skip(f"SLURM cannot be started here: {e}")
    for k, v in env.items():  # SLURM_CONF & co.
        monkeypatch.setenv(k, v)
    big = os.cpu_count() + 1
    site, src = load_site(site_file(tmp_path, {"provider": {"kind": "slurm", "partition": "debug",
                                                            "worker_init": ""}, "cores_per_worker": big}))
    with pytest.raises(PreflightError) as err:
        preflight(site, src)
    (line,) = str(err.value).splitlines()[1:]
    assert f"executor 'x': cores_per_worker {big} is more than the {os.cpu_count()} cores of a node of " \
           "partition 'debug'" in line
