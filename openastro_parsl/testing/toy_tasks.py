"""Toy tasks shared by the tests and the benchmarks: one definition, importable by any Parsl worker.

- ``NoopFirstTask`` -> ``NoopSecondTask``: a per-exposure chain whose work is all framework
  (``benchmarks/exec_overhead.py``).
- ``SkyCorrTask`` -> ``MakeWarpTask`` -> ``AssembleCoaddTask`` -> ``DetectionTask``: the shape of the LSST coadd
  step, for planning only (``benchmarks/plan_scaling.py``, which adds visit, tract and patch to the universe).
- ``FaultyStatsTask``: the real frame statistics plus faults switched on by a marker file (raise, kill the
  worker, run out of memory, no work, outlive a walltime, pad the output); ``StatsEchoTask`` consumes its
  output per exposure (the execution and safety tests, ``tests/pipelines/faulty.yaml``).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from pydantic import Field

from ..pipeline.connections import Connections, Input, Output
from ..pipeline.task import NoWorkFound, PipelineTask, import_task

__all__ = ["AssembleCoaddTask", "DetectionTask", "FaultyStatsConfig", "FaultyStatsTask", "MakeWarpTask",
           "NoopFirstTask", "NoopSecondTask", "SkyCorrTask", "StatsEchoTask"]

EXPOSURE = ("instrument", "exposure")


# --- no-op chain (execution overhead) ---

class NoopFirstConnections(Connections):
    seed = Input("noopSeed", EXPOSURE, "StructuredData")
    out = Output("noopFirst", EXPOSURE, "StructuredData")


class NoopFirstTask(PipelineTask):
    """Passes its input on: the work is all framework."""

    dimensions = EXPOSURE
    Connections = NoopFirstConnections

    def run(self, seed):
        return {"out": seed}


class NoopSecondConnections(Connections):
    inp = Input("noopFirst", EXPOSURE, "StructuredData")
    out = Output("noopSecond", EXPOSURE, "StructuredData")


class NoopSecondTask(PipelineTask):
    dimensions = EXPOSURE
    Connections = NoopSecondConnections

    def run(self, inp):
        return {"out": inp}


# --- LSST-coadd-shaped pipeline (planning only) ---

class _PlanOnly(PipelineTask):
    def run(self, **inputs):
        raise RuntimeError("planning benchmark task: never executed")


class SkyCorrConnections(Connections):
    calexp = Input("calexp", ("instrument", "visit"), "Image")
    out = Output("skyCorr", ("instrument", "visit"), "Image")


class SkyCorrTask(_PlanOnly):
    dimensions = ("instrument", "visit")
    Connections = SkyCorrConnections


class MakeWarpConnections(Connections):
    calexp = Input("skyCorr", ("instrument", "visit"), "Image")
    warp = Output("warp", ("instrument", "visit", "tract", "patch"), "Image")


class MakeWarpTask(_PlanOnly):
    dimensions = ("visit_patch",)
    Connections = MakeWarpConnections


class AssembleCoaddConnections(Connections):
    warps = Input("warp", ("instrument", "visit", "tract", "patch"), "Image", multiple=True)
    coadd = Output("coadd", ("tract", "patch", "band"), "Image")


class AssembleCoaddTask(_PlanOnly):
    dimensions = ("tract", "patch", "band")
    Connections = AssembleCoaddConnections


class DetectionConnections(Connections):
    coadd = Input("coadd", ("tract", "patch", "band"), "Image")
    det = Output("detections", ("tract", "patch", "band"), "Table")


class DetectionTask(_PlanOnly):
    dimensions = ("tract", "patch", "band")
    Connections = DetectionConnections


# --- faults on demand (execution and safety tests) ---

# Through import_task, so that the old dotted path keeps working wherever the science tasks live.
FrameStatsTask = import_task("openastro_parsl.tasks.qa.FrameStatsTask")


class FaultyStatsConfig(FrameStatsTask.Config):  # type: ignore[name-defined]
    fail_exposures: list[int] = Field(default_factory=list)
    marker: str = ""                 # faults happen only while this file exists
    fault: str = "raise"             # raise | kill_worker | memory | no_work | slow_once | hold
    sleep_s: float = 0.0
    pad_kb: int = 0                  # make the output this much bigger (to fill a disk)


class FaultyStatsTask(FrameStatsTask):  # type: ignore[valid-type,misc]
    """Frame statistics that print at every level (Python, C fd 1 and 2, logging) and fail on request."""

    Config = FaultyStatsConfig

    def run(self, raw, data_id=None):
        print(f"stdout from python for exposure {data_id['exposure']}")
        os.write(1, b"stdout from the C level (fd 1)\n")
        os.write(2, b"stderr from the C level (fd 2)\n")
        self.log.info("structured record for exposure %s", data_id["exposure"])
        if self.config.sleep_s:
            time.sleep(self.config.sleep_s)
        armed = self.config.marker and Path(self.config.marker).exists()
        held = armed and self.config.fault == "hold" and data_id["exposure"] in self.config.fail_exposures
        if held:  # the run stays busy until the test removes the marker (at most 300 s), then this succeeds
            deadline = time.monotonic() + 300
            while Path(self.config.marker).exists() and time.monotonic() < deadline:
                time.sleep(0.1)
        elif armed and data_id["exposure"] in self.config.fail_exposures:
            if self.config.fault == "kill_worker":
                Path(self.config.marker).unlink()  # die once; the retry succeeds
                os.kill(os.getpid(), signal.SIGKILL)
            if self.config.fault == "slow_once":
                Path(self.config.marker).unlink()  # outlive the block's walltime once; the retry is quick
                time.sleep(600)
            if self.config.fault == "no_work":
                raise NoWorkFound(f"nothing to measure on exposure {data_id['exposure']}")
            if self.config.fault == "memory":
                raise MemoryError("simulated allocation failure")
            raise ValueError(f"injected failure for exposure {data_id['exposure']}")
        sys.stdout.flush()
        out = super().run(raw)
        if self.config.pad_kb:
            out["stats"]["pad"] = "x" * (1024 * self.config.pad_kb)
        return out


class StatsEchoConnections(Connections):
    stats = Input("frameStats", EXPOSURE, "StructuredData")
    echo = Output("frameStatsEcho", EXPOSURE, "StructuredData")


class StatsEchoTask(PipelineTask):
    """A per-exposure consumer of frameStats: shows how a single missing input propagates."""

    dimensions = EXPOSURE
    Connections = StatsEchoConnections

    def run(self, stats):
        return {"echo": {"noise": stats["noise"]}}
