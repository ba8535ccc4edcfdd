"""Tasks for execution tests: real QA statistics plus controllable faults (a marker file turns a fault on).

Importable by Parsl workers because the execution tests put tests/ on PYTHONPATH before Parsl starts.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from pydantic import Field

from openastro_parsl.pipeline.connections import Connections, Input, Output
from openastro_parsl.pipeline.task import NoWorkFound, PipelineTask
from openastro_parsl.tasks.qa import FrameStatsConfig, FrameStatsTask


class FaultyStatsConfig(FrameStatsConfig):
    fail_exposures: list[int] = Field(default_factory=list)
    marker: str = ""                 # faults happen only while this file exists
    fault: str = "raise"             # raise | kill_worker | memory | no_work | slow_once
    sleep_s: float = 0.0
    pad_kb: int = 0                  # make the output this much bigger (to fill a disk)


class FaultyStatsTask(FrameStatsTask):
    Config = FaultyStatsConfig

    def run(self, raw, data_id=None):
        print(f"stdout from python for exposure {data_id['exposure']}")
        os.write(1, b"stdout from the C level (fd 1)\n")
        os.write(2, b"stderr from the C level (fd 2)\n")
        self.log.info("structured record for exposure %s", data_id["exposure"])
        if self.config.sleep_s:
            time.sleep(self.config.sleep_s)
        armed = self.config.marker and Path(self.config.marker).exists()
        if armed and data_id["exposure"] in self.config.fail_exposures:
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
    stats = Input("frameStats", ("instrument", "exposure"), "StructuredData")
    echo = Output("frameStatsEcho", ("instrument", "exposure"), "StructuredData")


class StatsEchoTask(PipelineTask):
    """A per-exposure consumer of frameStats: shows how a single missing input propagates."""

    dimensions = ("instrument", "exposure")
    Connections = StatsEchoConnections

    def run(self, stats):
        return {"echo": {"noise": stats["noise"]}}
