"""A lost block does not stop the live engine: Parsl's strategy starts a new one and later frames go through."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from openastro_parsl.live.engine import LiveEngine

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = str(ROOT / "pipelines" / "openastro.yaml") + "#plateSolve,calibrate"
FINAL = ("succeeded", "failed", "upstream_failed", "no_work")


def _kill_worker_pools(run_dir: Path) -> int:
    """SIGKILL the process groups of the Parsl worker pools of a run (a lost block); returns how many."""
    groups = set()
    for p in psutil.process_iter(["cmdline"]):
        line = " ".join(p.info["cmdline"] or ())
        if "process_worker_pool" in line and str(run_dir) in line:
            groups.add(os.getpgid(p.pid))
    groups.discard(os.getpgrp())
    for g in groups:
        os.killpg(g, signal.SIGKILL)
    return len(groups)


def _processed(engine: LiveEngine, exposure: dict, limit: float) -> dict[str, dict]:
    ((key, qids),) = engine.submit([exposure]).items()
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        states = engine.states(qids)
        if qids and all(s["state"] in FINAL for s in states.values()):
            return states
        time.sleep(0.2)
    raise AssertionError(f"{key}: not processed within {limit} s: {engine.states(qids)}")


@pytest.mark.slow  # ~45 s: most of it Parsl noticing the lost manager and starting a new block
def test_engine_survives_a_lost_block(demo, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    site = tmp_path / "site.yaml"  # the local site, with a lost pool noticed in seconds rather than a minute
    site.write_text("executors:\n  - label: local\n    provider: {kind: local, init_blocks: 1, max_blocks: 1}\n"
                    "    heartbeat_threshold: 5\n    resource_classes: [fast, slow, mcmc]\nretries: 2\n")
    frames = [e for e in sorted(demo.truth["exposures"], key=lambda e: e["mjd"]) if e["instrument"] == "lco1m"]
    ids = [{"instrument": e["instrument"], "exposure": e["exposure"]} for e in frames[:2]]
    with LiveEngine(demo.butler.root, PIPELINE, site, "blocks", inputs=["demo/defaults"], warm=()) as engine:
        before = _processed(engine, ids[0], 60)
        assert all(s["state"] == "succeeded" for s in before.values()), before
        assert _kill_worker_pools(engine._sub.run_dir) >= 1
        after = _processed(engine, ids[1], 90)
        assert all(s["state"] == "succeeded" for s in after.values()), after
