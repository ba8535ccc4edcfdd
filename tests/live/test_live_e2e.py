"""Live mode end to end through Parsl HTEX over part of the demo survey.

Three template-epoch frames arrive at once (one plan), the reference grid and the template are gathered into
versioned RUN collections behind ``live/<name>``, the frames waiting for them are planned again, then the
transient's first frame is alerted (a lost block: tests/live/test_engine_blocks.py).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from openastro_parsl.live.engine import LiveEngine

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = str(ROOT / "pipelines" / "openastro.yaml") + "#transient"
FINAL = ("succeeded", "failed", "upstream_failed", "no_work")
TEMPLATE_MJD_MAX = 61120.0  # pipelines/transient.yaml templateCoadd:mjd_max


def _wait(predicate, limit: float, what: str):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {limit:.0f} s waiting for {what}")


def _finished(engine: LiveEngine, qids: list[str]) -> dict[str, dict] | None:
    states = engine.states(qids)
    return states if len(states) == len(qids) and all(s["state"] in FINAL for s in states.values()) else None


def test_live_run_over_demo_frames(demo, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    truth = demo.truth
    frames = sorted(truth["exposures"], key=lambda e: e["mjd"])
    early = [e for e in frames if e["mjd"] < TEMPLATE_MJD_MAX and e["instrument"] == "slt40" and e["band"] == "r"]
    transient = truth["transient"]
    late = [e for e in frames if e["mjd"] >= transient["mjd_start"] and e["field"] == transient["field"]]
    gather = {"makeRefGrid": {"after": 3, "max_versions": 1}, "templateCoadd": {"after": 3},
              "linkMovers": {"after": 1000}}
    engine = LiveEngine(demo.butler.root, PIPELINE, None, "e2e", gather=gather, inputs=["demo/defaults"],
                        tick_s=0.3, batch_window_s=0.5)
    with engine:
        # a burst: three uploads at once from three threads plan once
        ids = [{"instrument": e["instrument"], "exposure": e["exposure"]} for e in early[:3]]
        answers: list[dict] = [{}, {}, {}]
        calls = [threading.Thread(target=lambda i=i: answers[i].update(engine.submit([ids[i]]))) for i in range(3)]
        for c in calls:
            c.start()
        for c in calls:
            c.join()
        assert engine.plan_count == 1
        first = {k: v for a in answers for k, v in a.items()}
        assert len(first) == 3 and all(len(v) == 2 for v in first.values())  # plateSolve, calibrate: no grid yet
        # the same exposure again: nothing planned twice, the same quanta named
        n_quanta = len(engine._sub.graph.quanta)
        again = engine.submit(ids[:1])
        assert again == {k: first[k] for k in again} and len(engine._sub.graph.quanta) == n_quanta

        # gathering: grid after 3 frames, then warps, then the template; each a versioned run behind the chain
        _wait(lambda: any(v["task"] == "templateCoadd" for v in engine.versions), 40, "the template")
        reg = demo.butler.registry
        chain = reg.query_collections("live/e2e")[0].children
        assert chain == ("live/e2e/templateCoadd/1", "live/e2e/makeRefGrid/1", "live/e2e/prompt")
        assert not engine.gather_errors

        # the transient's first frame: alerted at the transient's position
        t_submit = time.time()
        key, qids = next(iter(engine.submit([{"instrument": late[0]["instrument"],
                                               "exposure": late[0]["exposure"]}]).items()))
        states = _wait(lambda: _finished(engine, qids), 40, f"the quanta of {key}")
        assert {s["task"] for s in states.values()} >= {"diffim", "rbClassify", "alerts"}
        assert all(s["state"] == "succeeded" for s in states.values()), states
        alerts = engine.alerts_since(t_submit)
        assert alerts and {a["exposure"] for a in alerts} == {late[0]["exposure"]}
        sep = np.hypot((np.array([a["ra"] for a in alerts]) - transient["ra"]) * np.cos(np.radians(transient["dec"])),
                       np.array([a["dec"] for a in alerts]) - transient["dec"]) * 3600
        assert sep.min() < 2.0
        assert Path(alerts[0]["stamps"]).exists()

    # everything registered once: one calexp per submitted exposure in the per-frame run
    calexps = reg.query_datasets("calexp", ["live/e2e/prompt"], find_first=False)
    assert len(calexps) == len({r.data_id["exposure"] for r in calexps}) == 4
