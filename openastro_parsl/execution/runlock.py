"""One writer per output run: a lock file that names its holder and survives the holder's death.

Two submits (or a submit and a ``--resume``) writing the same RUN collection would each write the same
predicted output paths and register them, leaving files that no longer match their checksums. The lock is a
small JSON file at ``REPO/submit/<run>/writer.lock`` saying who holds it (host, pid, the pid's start time,
run directory, since when). It is taken with ``O_EXCL``; the holder refreshes its modification time every
``HEARTBEAT_S`` from a background thread. A lock whose holder is gone is stale and is taken over with a
message: on the same host the pid (and its start time, so a reused pid does not count) tells; from another
host (a second login node of a cluster sharing the file system) only the heartbeat can, so such a lock is
stale once it has not been refreshed for ``STALE_S``. Takeovers are serialised by ``flock`` on a guard file,
so two newcomers cannot both take over one stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import OpenAstroError

LOCK_NAME = "writer.lock"
HEARTBEAT_S = 15.0
STALE_S = 120.0


class RunLockedError(OpenAstroError):
    """Another live process is writing this output run."""


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), which tells a pid apart from its reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def holder_alive(info: dict[str, Any], mtime: float | None = None) -> bool:
    """Whether the process described by a lock (or a run's status metadata) is still there.

    Same host: the pid exists and started when the holder said. Another host: the lock was refreshed within
    ``STALE_S`` (without a lock file to look at, a process on another host is taken as alive).
    """
    if info.get("host") != socket.gethostname():
        return mtime is None or time.time() - mtime < STALE_S
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    start = process_start_time(pid)
    if start is None:
        return False
    return info.get("pid_start") in (None, start)


def lock_path(repo_root: Path, run: str) -> Path:
    """Where the writer lock of output run ``run`` lives: ``REPO/submit/<run>/writer.lock``."""
    return Path(repo_root) / "submit" / run / LOCK_NAME


def read_lock(path: Path) -> tuple[dict[str, Any], float] | None:
    """The lock's content and modification time; None when there is no lock."""
    try:
        mtime = path.stat().st_mtime
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        info = json.loads(text)
    except ValueError:
        info = {}  # torn by a crash mid-write, or being written right now: judged by its age below
    return (info if isinstance(info, dict) else {}), mtime


def describe(info: dict[str, Any]) -> str:
    """The lock's holder in words (pid, host, start time, run directory), for refusals and notes."""
    since = info.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "?"
    return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, since {when}"
            + (f", run directory {info['run_dir']}" if info.get("run_dir") else ""))


class RunLock:
    """Held by the process that writes an output run, from before its first write until it has stopped."""

    def __init__(self, repo_root: str | Path, run: str, run_dir: str | Path | None = None,
                 *, notify: Callable[[str], None] | None = None):
        self.path = lock_path(Path(repo_root), run)
        self.run = run
        self.run_dir = str(run_dir) if run_dir else None
        self.notify = notify or (lambda message: None)
        self.info: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._guard():
            found = read_lock(self.path)
            if found is not None:
                info, mtime = found
                torn_but_young = not info and time.time() - mtime < STALE_S
                if torn_but_young or holder_alive(info, mtime):
                    raise RunLockedError(
                        f"output run {self.run!r} is being written by {describe(info)}; wait for it to end "
                        f"(or stop it) before submitting or resuming into this run again")
                self.notify(f"taking over the lock of output run {self.run!r} from {describe(info)}: "
                            "that process is gone")
                self.path.unlink()
            self.info = {"host": socket.gethostname(), "pid": os.getpid(),
                         "pid_start": process_start_time(os.getpid()), "started": time.time(),
                         "run_dir": self.run_dir, "run": self.run}
            tmp = self.path.with_name(f".{LOCK_NAME}.{os.getpid()}")
            tmp.write_text(json.dumps(self.info))
            os.link(tmp, self.path)  # fails if somebody else's lock appeared: never overwrite one
            tmp.unlink()
        self._thread = threading.Thread(target=self._heartbeat, name="openastro-run-lock", daemon=True)
        self._thread.start()
        return self

    def set_run_dir(self, run_dir: str | Path) -> None:
        self.info["run_dir"] = str(run_dir)
        tmp = self.path.with_name(f".{LOCK_NAME}.{os.getpid()}")
        tmp.write_text(json.dumps(self.info))
        os.replace(tmp, self.path)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        found = read_lock(self.path)
        if found is not None and found[0].get("pid") == os.getpid() and found[0].get("host") == socket.gethostname():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    @contextlib.contextmanager
    def _guard(self):
        fd = os.open(self.path.with_name(f".{LOCK_NAME}.guard"), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def run_liveness(repo_root: str | Path, run: str, meta: dict[str, Any]) -> bool:
    """Whether the submit process recorded in a run's status metadata is still alive.

    The writer lock is the better witness (it carries a heartbeat for holders on other hosts); the status
    store's own record of the submit process (host, pid, pid start) serves when the lock is gone.
    """
    found = read_lock(lock_path(Path(repo_root), run))
    if found is not None:
        info, mtime = found
        if info.get("pid") == meta.get("pid") and info.get("host") == meta.get("host"):
            return holder_alive(info, mtime)
    if meta.get("host") != socket.gethostname():
        return False  # no lock left: the submit on the other host released it or its lock was taken over
    return holder_alive(meta)
