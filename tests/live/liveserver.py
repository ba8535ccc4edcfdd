"""A real `openastro-serve` process on 127.0.0.1 for the live tests: started, waited for, killed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import requests

import openastro_parsl


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, repo: Path, *args: str, port: int | None = None):
        self.repo, self.args = Path(repo), args
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = self.repo.parent / f"serve-{self.port}.out"

    def start(self, timeout: float = 60.0) -> "Server":
        # the package this test imported, whatever the installed copy points at
        root = str(Path(openastro_parsl.__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "openastro_parsl.cli.serve", str(self.repo),
                                          "--port", str(self.port), *self.args], stdout=out, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"openastro-serve exited {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if requests.get(self.url + "/health", timeout=1).ok:
                    return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError(f"openastro-serve not up after {timeout} s:\n{self.log.read_text()}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill9()

    def wait_for(self, frame_id: int, states=("done", "quarantined", "failed"), timeout: float = 60.0) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            rec = requests.get(f"{self.url}/frames/{frame_id}", timeout=5).json()
            if rec["state"] in states:
                return rec
            time.sleep(0.1)
        raise AssertionError(f"frame {frame_id} still {rec['state']} after {timeout} s")


def upload(url: str, data: bytes, site: str | None, token: str | None, **kw) -> requests.Response:
    headers = dict(kw.pop("headers", {}))
    if site is not None:
        headers["X-OpenAstro-Site"] = site
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if "files" not in kw:
        headers.setdefault("Content-Type", "application/fits")
        kw["data"] = data
    return requests.post(url + "/frames", headers=headers, timeout=30, **kw)


class PageDom(HTMLParser):
    """Rows of the frames table, the count cells, the alert images and any external reference."""

    def __init__(self):
        super().__init__()
        self.frames, self.counts, self.images, self.external, self.ids = [], {}, [], [], set()
        self._row = self._cell = self._table = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "table":
            self._table = a.get("id")
        elif tag == "tr" and a.get("class") == "frame":
            self._row = []
            self.frames.append(self._row)
        elif tag == "td":
            self._cell = a.get("data-state")
            if self._row is not None:
                self._row.append("")
        elif tag == "img":
            self.images.append(a)
        for key in ("src", "href"):
            if a.get(key) and not a[key].startswith("data:"):
                self.external.append(a[key])

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None
        elif tag == "td":
            self._cell = None

    def handle_data(self, data):
        if self._row is not None and self._row:
            self._row[-1] += data
        if self._cell is not None:
            self.counts[(self._table, self._cell)] = int(data)
