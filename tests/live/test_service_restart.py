"""Restart safety: kill -9 the real service in the middle of a burst of uploads, start it again, and every
upload it answered 2xx is ingested exactly once (nothing lost, nothing twice)."""

import contextlib
import os
import re
import threading
import time
from collections import Counter

import pytest
import requests
from browser import chromium_dom
from live.liveserver import PageDom, Server, upload
from testdata import QA, lco_header, write_frame

from openastro_parsl.butler import Butler
from openastro_parsl.live.tokens import TokenStore

N_FRAMES, KILL_AFTER = 40, 12


def _burst(server, frames, token, answered, stop_at, killed):
    """Upload from 4 threads; kill -9 the service once ``stop_at`` uploads are answered 2xx."""
    lock, queue = threading.Lock(), list(enumerate(frames))

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                i, data = queue.pop(0)
            try:
                r = upload(server.url, data, "ogg", token)
            except requests.ConnectionError:
                continue  # the service is gone: this upload was never answered
            if r.status_code in (200, 202):
                with lock:
                    answered[i] = r.json()
                    if len(answered) == stop_at and not killed:
                        server.kill9()
                        killed.append(True)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _drained(server, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        health = requests.get(server.url + "/health").json()
        if health["queue"] == 0:
            return health
        time.sleep(0.2)
    raise AssertionError(f"queue not empty after {timeout} s: {health}")


def test_kill9_mid_burst_loses_nothing_and_ingests_nothing_twice(tmp_path):
    repo = Butler.create(tmp_path / "repo").root
    token, _ = TokenStore(repo).add("ogg")
    src = tmp_path / "src"
    src.mkdir()
    frames = [write_frame(src / f"f{i}.fits", lco_header(2000 + i, "rp" if i % 2 else "gp"), seed=i).read_bytes()
              for i in range(N_FRAMES)]
    # a batch window of 0.3 s: the kill lands while frames wait for ingest and while others are being ingested
    server = Server(repo, "--batch-window", "0.3").start()
    answered, killed = {}, []
    _burst(server, frames, token, answered, KILL_AFTER, killed)
    assert killed and len(answered) >= KILL_AFTER
    assert server.proc.returncode == -9

    server = Server(repo, "--batch-window", "0.05", port=server.port).start()
    try:
        health = _drained(server)
        log = (repo / "live" / "default" / "service.log").read_text()
        resumed = int(re.findall(r"(\d+) frame\(s\) to resume", log)[-1])
        assert resumed >= 1  # the restart had queued work to pick up
        assert health["frames"].get("accepted", 0) == 0 and health["frames"].get("ingested", 0) == 0
        for i, answer in answered.items():  # every 2xx-answered upload is ingested, as its own exposure
            rec = requests.get(f"{server.url}/frames/{answer['id']}").json()
            assert rec["state"] == "done", rec
            assert rec["sha256"] == answer["sha256"] and rec["exposure"]["exposure"] == 2000 + i
        # the telescope retries everything it sent: answered ones are recognised, the rest accepted now
        for i, data in enumerate(frames):
            r = upload(server.url, data, "ogg", token)
            assert r.status_code in ((200,) if i in answered else (200, 202))
            if i in answered:
                assert r.json()["id"] == answered[i]["id"]
        _drained(server)
    finally:
        server.stop()
    butler = Butler(repo)
    raws = butler.query_datasets("raw", "raw/all")
    per_exposure = Counter(r.data_id["exposure"] for r in raws)
    assert sorted(per_exposure) == list(range(2000, 2000 + N_FRAMES)) and set(per_exposure.values()) == {1}
    assert butler.verify() == (N_FRAMES, [])
    assert not (repo / "quarantine").exists()


def _reap(repo) -> None:
    """SIGKILL what the killed service left running for this repository (its Parsl interchange and workers)."""
    import psutil

    for p in psutil.process_iter(["pid", "cmdline"]):
        if str(repo) in " ".join(p.info["cmdline"] or []) and p.pid != os.getpid():
            with contextlib.suppress(psutil.Error):
                p.kill()


@pytest.mark.slow  # ~40 s: two Parsl starts
def test_kill9_while_processing_with_the_real_engine(tmp_path):
    """The same with the live engine on Parsl (qa.yaml#frames): frames being processed when the service dies
    are processed by the next one, each quantum registered once."""
    repo = Butler.create(tmp_path / "repo").root
    token, _ = TokenStore(repo).add("ogg")
    args = ("--pipeline", f"{QA}#frames", "--batch-window", "0.2")
    frames = [write_frame(tmp_path / f"f{i}.fits", lco_header(4000 + i), seed=i).read_bytes() for i in range(6)]
    server = Server(repo, *args).start()
    try:
        ids = {}
        for i, data in enumerate(frames):
            r = upload(server.url, data, "ogg", token)
            assert r.status_code == 202
            ids[i] = r.json()["id"]
        # kill once the engine has taken frames (some processing), before all of them are done
        states = _wait_states(server, ids.values(), lambda s: "processing" in s or "done" in s)
        assert set(states) != {"done"}
        server.kill9()
    finally:
        _reap(repo)
    server = Server(repo, *args, port=server.port).start()
    try:
        for i, fid in ids.items():
            rec = server.wait_for(fid, timeout=120)
            assert rec["state"] == "done" and rec["exposure"]["exposure"] == 4000 + i, rec
            assert [q["task"] for q in rec["quanta"]] == ["frameStats"] and rec["quanta"][0]["state"] == "succeeded"
        doc = PageDom()  # the status page, in the browser, with the engine's quanta
        doc.feed(chromium_dom(server.url + "/", tmp_path))
        assert doc.counts == {("frame-states", "done"): 6, ("quanta", "succeeded"): 6}
        assert sorted(int(row[0]) for row in doc.frames) == sorted(ids.values())
        assert {row[5] for row in doc.frames} == {"1"} and "no-alerts" in doc.ids
    finally:
        server.stop()
        _reap(repo)
    butler = Butler(repo)
    stats = butler.query_datasets("frameStats", "live/default/prompt", find_first=False)
    assert sorted(r.data_id["exposure"] for r in stats) == [4000 + i for i in range(6)]
    assert len(butler.query_datasets("raw", "raw/all")) == 6


def _wait_states(server, ids, done, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        states = [requests.get(f"{server.url}/frames/{i}").json()["state"] for i in ids]
        if done(states):
            return states
        time.sleep(0.05)
    raise AssertionError(f"frames still {states} after {timeout} s")
