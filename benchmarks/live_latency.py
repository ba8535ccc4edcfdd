"""Live mode latency: the demo survey's frames replayed in observing order at a fixed rate through LiveEngine.

    python benchmarks/live_latency.py [--intervals 5] [--template-frames 20] [--after-frames 20] [--repo DIR]
    python benchmarks/live_latency.py --intervals 5,2,1 --after-frames 40      # the sustained-rate sweep

With ``--http`` each frame is POSTed to a real ``openastro-serve`` on 127.0.0.1 (token, upload, durable inbox,
ingest, the engine; latency from the upload to the frame's ``alerts`` quantum finishing, as ``GET /frames/ID``
reports it). Without it frames are handed to ``LiveEngine.submit`` as the service does after ingest (the demo
survey's raws are already ingested; HTTP upload and ingest are then not in the figures). The template epochs come first: the reference grid and
the template are gathered from them while they arrive; then every frame's latency is the time from its submit to
its ``alerts`` quantum finishing (registered). For each interval it prints median and p95, whether the injected
transient was alerted from its first frame, and whether the queue grew (the second half's median latency above
1.5x the first half's plus a second); the sweep ends with the fastest rate that kept up. Each interval runs a fresh
engine under its own live name; the machine's load is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = str(ROOT / "pipelines" / "openastro.yaml") + "#transient"
FINAL = ("succeeded", "failed", "upstream_failed", "no_work")
TEMPLATE_MJD_MAX = 61120.0


def _plan_replay(truth: dict, n_template: int, n_after: int) -> tuple[list[dict], list[dict], dict, dict]:
    """The frames to replay in observing order, the template-epoch ones, the transient's first, the gathering."""
    frames = sorted(truth["exposures"], key=lambda e: e["mjd"])
    early = [e for e in frames if e["mjd"] < TEMPLATE_MJD_MAX]
    if n_template:
        early = early[::max(1, len(early) // n_template)][:n_template]
    later = [e for e in frames if e["mjd"] >= TEMPLATE_MJD_MAX][:n_after or None]
    first = min((e for e in frames if e["mjd"] >= truth["transient"]["mjd_start"]), key=lambda e: e["mjd"])
    gather = {"makeRefGrid": {"after": max(3, len(early) // 3), "max_versions": 1},
              "templateCoadd": {"after": max(3, len(early) // 2), "max_versions": 1},
              "linkMovers": {"after": 10}}
    return early + later, early, first, gather


def _summary(timed: list[float]) -> bool:
    """Print median, p95 and whether the queue grew (latencies in upload order); True when it kept up."""
    if not timed:
        return False
    ordered = sorted(timed)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    print(f"upload-to-alert latency: median {statistics.median(timed):.2f} s, p95 {p95:.2f} s, max {ordered[-1]:.2f} s")
    half = len(timed) // 2
    a, b = statistics.median(timed[:half] or timed), statistics.median(timed[half:])
    kept_up = b <= 1.5 * a + 1.0
    print(f"  first half median {a:.2f} s, second half {b:.2f} s: {'kept up' if kept_up else 'the queue grew'}")
    return kept_up


def replay_http(root: Path, truth: dict, interval: float, n_template: int, n_after: int) -> bool:
    """One replay through a real ``openastro-serve``; prints its figures; True when the queue did not grow."""
    import signal
    import socket
    import subprocess

    import requests

    from openastro_parsl.live.tokens import TokenStore

    sequence, early, first, gather = _plan_replay(truth, n_template, n_after)
    name = f"http-{interval:g}".replace(".", "_")
    token, _ = TokenStore(root).add("bench")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    rules = [f"{task}:" + ",".join(f"{k}={v}" for k, v in rule.items()) for task, rule in gather.items()]
    cmd = [sys.executable, "-m", "openastro_parsl.cli.serve", str(root), "--port", str(port), "--name", name,
           "--pipeline", PIPELINE, "--inputs", "demo/defaults", "--batch-window", "0.2",
           *[x for r in rules for x in ("--gather", r)]]
    print(f"\n{len(sequence)} frames ({len(early)} template epochs) POSTed every {interval:g} s to {url}; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    log = open(root.parent / f"serve-{name}.log", "ab")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        t0 = time.monotonic()
        while True:
            try:
                if requests.get(url + "/health", timeout=1).json().get("engine") == "running":
                    break
            except requests.RequestException:
                pass
            if server.poll() is not None or time.monotonic() - t0 > 120:
                raise SystemExit(f"openastro-serve did not come up: see {log.name}")
            time.sleep(0.2)
        print(f"service up in {time.monotonic() - t0:.1f} s", flush=True)
        headers = {"Authorization": f"Bearer {token}", "X-OpenAstro-Site": "bench",
                   "Content-Type": "application/fits"}
        uploaded: dict[int, float] = {}
        done: dict[int, float | None] = {}  # frame id -> latency (None: no alerts quantum)
        stop = threading.Event()

        def follow() -> None:
            while not stop.is_set():
                for fid, t in list(uploaded.items()):
                    if fid in done:
                        continue
                    rec = requests.get(f"{url}/frames/{fid}", timeout=10).json()
                    alerts = [q["state"] for q in rec.get("quanta", []) if q.get("task") == "alerts"]
                    if alerts and all(s in FINAL for s in alerts):
                        done[fid] = time.monotonic() - t
                    elif rec["state"] in ("done", "failed", "quarantined") and not alerts:
                        done[fid] = None
                time.sleep(0.1)

        threading.Thread(target=follow, daemon=True).start()
        start = time.monotonic()
        for i, e in enumerate(sequence):
            time.sleep(max(0.0, start + i * interval - time.monotonic()))
            body = (root / "demo_survey" / "raw" / e["file"]).read_bytes()
            t = time.monotonic()
            answer = requests.post(url + "/frames", data=body, headers=headers, timeout=30)
            answer.raise_for_status()
            uploaded[answer.json()["id"]] = t
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(done) < len(uploaded):
            time.sleep(0.5)
        stop.set()
        timed = [v for f in sorted(uploaded) if (v := done.get(f)) is not None]
        print(f"frames with an alerts quantum: {len(timed)} of {len(sequence)} (the others: before the template)")
        kept_up = _summary(timed)
        alerts = requests.get(f"{url}/alerts", params={"since": 0}, timeout=30).json()["alerts"]
        alerted = {a["exposure"] for a in alerts if abs(a["ra"] - truth["transient"]["ra"]) * 3600 < 3
                   and abs(a["dec"] - truth["transient"]["dec"]) * 3600 < 3}
        print(f"injected transient: first frame {first['instrument']} {first['exposure']} "
              f"{'ALERTED' if first['exposure'] in alerted else 'not alerted'}; frames alerting it: {len(alerted)}; "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
        return kept_up
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def replay(root: Path, truth: dict, interval: float, n_template: int, n_after: int) -> bool:
    """One replay at ``interval`` seconds per frame; prints its figures; True when the queue did not grow."""
    from openastro_parsl.execution.status import StatusStore
    from openastro_parsl.execution.submit import STATUS_FILE
    from openastro_parsl.live.engine import LiveEngine

    sequence, early, first, gather = _plan_replay(truth, n_template, n_after)
    first_key = f"instrument={first['instrument']},exposure={first['exposure']}"
    print(f"\n{len(sequence)} frames ({len(early)} template epochs) every {interval:g} s; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    name = f"bench-{interval:g}".replace(".", "_")
    engine = LiveEngine(root, PIPELINE, None, name, gather=gather, inputs=["demo/defaults"], tick_s=1.0)
    t0 = time.monotonic()
    engine.start()
    print(f"engine up in {time.monotonic() - t0:.1f} s", flush=True)
    submitted: dict[str, tuple[float, list[str]]] = {}
    done: dict[str, float] = {}
    stop = threading.Event()

    def follow() -> None:
        while not stop.is_set():
            for key, (t, qids) in list(submitted.items()):
                if key in done:
                    continue
                states = engine.states(qids)
                alerts = [s["state"] for s in states.values() if s["task"] == "alerts"]
                if alerts and all(s in FINAL for s in alerts):
                    done[key] = time.monotonic() - t
            time.sleep(0.1)

    threading.Thread(target=follow, daemon=True).start()
    start = time.monotonic()
    for i, e in enumerate(sequence):
        time.sleep(max(0.0, start + i * interval - time.monotonic()))
        t = time.monotonic()
        ((key, qids),) = engine.submit([{"instrument": e["instrument"], "exposure": e["exposure"]}]).items()
        submitted[key] = (t, qids)
    timed_keys = [k for k, (_, q) in submitted.items() if any(s["task"] == "alerts" for s in engine.states(q).values())]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and any(k not in done for k in timed_keys):
        time.sleep(0.5)
    stop.set()
    alerted = {a["exposure"] for a in engine.alerts_since(0)
               if abs(a["ra"] - truth["transient"]["ra"]) * 3600 < 3
               and abs(a["dec"] - truth["transient"]["dec"]) * 3600 < 3}
    sub = engine._sub
    assert sub is not None
    workers, run_dir, plans = sub._workers, sub.run_dir, engine.plan_count
    engine.stop()
    timed = [done[k] for k in timed_keys if k in done]  # in upload order
    print(f"frames with an alerts quantum at upload: {len(timed_keys)} of {len(sequence)}; finished: {len(timed)}")
    kept_up = _summary(timed)
    print(f"injected transient: first frame {first_key} "
          f"{'ALERTED' if first['exposure'] in alerted else 'not alerted'}"
          f"{'' if first_key in submitted else ' (not in the replay)'}; frames alerting it: {len(alerted)}")
    walls: dict[str, float] = {}
    frame_tasks = {t.label for t in engine.frame_tasks}
    for row in StatusStore(run_dir / STATUS_FILE).rows():  # the loop's own connection belongs to its thread
        if row["wall"] is not None and row["task"] in frame_tasks:
            walls[row["data_id"]] = walls.get(row["data_id"], 0.0) + row["wall"]
    if walls:
        per_frame = statistics.mean(walls.values())
        print(f"per-frame quantum time {per_frame:.2f} s on {workers} workers (compute bound: one frame every "
              f"{per_frame / workers:.2f} s)")
    print(f"plans: {plans}; gathering versions: {[v['run'] for v in engine.versions]}; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    return kept_up


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--intervals", default="5", help="seconds between frames, comma-separated (a sweep)")
    ap.add_argument("--template-frames", type=int, default=20, help="template-epoch frames replayed (0: all)")
    ap.add_argument("--after-frames", type=int, default=20, help="frames replayed after the template epochs (0: all)")
    ap.add_argument("--repo", type=Path, help="repository to use (default: a new temporary one)")
    ap.add_argument("--http", action="store_true", help="upload through a real openastro-serve")
    args = ap.parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, str(ROOT))
    from openastro_parsl.demo import make_demo_repo

    root = args.repo or Path(tempfile.mkdtemp(prefix="live-latency-")) / "repo"
    truth = make_demo_repo(root, seed=42, size="small").truth
    print(f"repo {root}")
    kept = [iv for iv in (float(x) for x in args.intervals.split(","))
            if (replay_http if args.http else replay)(root, truth, iv, args.template_frames, args.after_frames)]
    if len(args.intervals.split(",")) > 1:
        print(f"\nfastest rate that kept up: {'one frame every %g s' % min(kept) if kept else 'none of those tried'}")


if __name__ == "__main__":
    main()
