"""Starting and stopping Parsl: a background start, Ctrl-C / SIGTERM, a bounded cleanup, a guarded interchange.

Parsl's HighThroughputExecutor has three kinds of processes: the submit (the DataFlowKernel), the
interchange it starts, and the worker pools that blocks run (LocalProvider starts them in process groups of
their own; SLURM on other nodes). Left as Parsl starts them, a terminal's Ctrl-C also kills the interchange,
after which ``dfk.cleanup()`` waits forever for it to answer; and a SIGKILLed submit leaves the interchange
feeding queued tasks to the pools, which go on writing files while a ``--resume`` runs. So:

- the interchange is launched through ``python -m openastro_parsl.execution.shutdown PID``: it moves to a
  process group of its own (signals a terminal or ``kill -- -PGID`` sends reach only the submit, which then
  stops everything in order), and when its parent is gone or it is sent SIGTERM it tells every connected
  worker pool to shut down (Parsl's own SHUTDOWN message: the pools stop their workers at once) and exits;
- the submit turns SIGINT / SIGTERM into a flag its loop polls (``Interrupts``), writes the run's state and
  summary, and only then cleans Parsl up, with a time limit (``stop_parsl``): past it, or at a second
  Ctrl-C, it stops the interchanges itself and kills local blocks' process groups;
- Parsl starts in a thread (``Background``) while the submit registers the run: a run that fails or is
  refused meanwhile waits for that start to finish and stops it (``discard_parsl``), so no interchange or
  pool outlives it.

A pool whose interchange was killed outright (SIGKILL, OOM) still exits on Parsl's heartbeat, after the
site's ``heartbeat_threshold``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any, Callable

logger = logging.getLogger(__name__)

# What signal.signal() takes and gives back: a handler, SIG_DFL / SIG_IGN, or None (not installed from Python).
_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

CLEANUP_TIMEOUT_S = 15.0  # Parsl's own cleanup gets this long before the interchanges are stopped by force
_FORCE_WAIT_S = 3.0


class Interrupts:
    """SIGINT and SIGTERM as a flag for the submit loop instead of an exception in whatever it was doing.

    The first signal asks the loop to stop; one arriving while Parsl is being cleaned up (a second Ctrl-C)
    sets ``hurry``, which cuts that cleanup short. Handlers are installed only in the main thread.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: str | None = None  # name of the first signal
        self.count = 0
        self.stopping = False
        self.hurry = threading.Event()
        self._old: dict[int, _Handler] = {}

    def install(self) -> "Interrupts":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def restore(self) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _handle(self, signum, frame) -> None:
        self.count += 1
        self.received = self.received or signal.Signals(signum).name
        if self.stopping or self.count > 1:
            self.hurry.set()


def interchange_command(parent_pid: int | None = None) -> list[str]:
    """HTEX ``interchange_launch_cmd`` that runs Parsl's interchange under this module's guard."""
    return [sys.executable, "-m", __name__, str(parent_pid or os.getpid())]


def load_parsl(config):
    """``parsl.load`` with every HighThroughputExecutor's interchange launched under the guard."""
    import parsl
    from parsl.executors import HighThroughputExecutor

    for ex in config.executors:
        if isinstance(ex, HighThroughputExecutor):
            ex.interchange_launch_cmd = interchange_command()
    return parsl.load(config)


class Background:
    """A call running in a daemon thread (Parsl starting while the submit prepares its run); ``result`` joins it.

    The call's exception, if any, is raised by ``result`` in the caller's thread.
    """

    def __init__(self, fn: Callable[[], Any], name: str):
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, args=(fn,), name=name, daemon=True)
        self._thread.start()

    def _main(self, fn: Callable[[], Any]) -> None:
        try:
            self._result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that asks for the result
            self._error = exc

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


def discard_parsl(starting: Background) -> None:
    """Wait for a Parsl start the run no longer needs (it was refused or failed meanwhile), then stop it."""
    try:
        dfk = starting.result()
    except Exception as exc:  # noqa: BLE001 - it did not start: nothing to stop, and the run's own error is the one to see
        logger.warning("Parsl did not start either: %s: %s", type(exc).__name__, str(exc).splitlines()[:1])
        return
    stop_parsl(dfk)


def stop_parsl(dfk, interrupts: Interrupts | None = None, timeout: float = CLEANUP_TIMEOUT_S) -> bool:
    """``dfk.cleanup()`` (cancel blocks, stop the interchanges) with a time limit; True when it finished.

    Parsl's cleanup can block without end (a command to an interchange that is gone has no timeout), so it
    runs in a daemon thread. Past ``timeout``, or when ``interrupts.hurry`` is set, the interchanges are
    stopped by force (they shut their worker pools down on SIGTERM) and local blocks are killed.
    """
    import parsl

    if interrupts is not None:
        interrupts.stopping = True
    done = threading.Event()
    finished: list[bool] = []

    def cleanup() -> None:
        try:
            dfk.cleanup()
            finished.append(True)
        except Exception:  # noqa: BLE001 - a failed cleanup is followed by the forced one
            logger.exception("Parsl cleanup failed")
        finally:
            done.set()

    threading.Thread(target=cleanup, name="parsl-cleanup", daemon=True).start()
    deadline = time.monotonic() + timeout
    while not done.wait(0.1):
        if time.monotonic() > deadline or (interrupts is not None and interrupts.hurry.is_set()):
            break
    if not finished:
        logger.warning("Parsl cleanup did not finish: stopping its processes by force")
        _force_stop(dfk)
    parsl.clear()
    return bool(finished)


def _force_stop(dfk) -> None:
    """Stop every executor's interchange (SIGTERM, then SIGKILL) and kill local blocks' process groups."""
    procs = []
    for ex in dfk.executors.values():
        proc = getattr(ex, "interchange_proc", None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            procs.append(proc)
        for job in list(getattr(getattr(ex, "provider", None), "resources", {}).values()):
            if isinstance(job, dict) and job.get("remote_pid") and not job.get("cancelled"):
                _kill_block(job["remote_pid"], job.get("script_path"))
    deadline = time.monotonic() + _FORCE_WAIT_S
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired
            proc.kill()


def _kill_block(pid: int, script: str | None) -> None:
    """SIGKILL the process group of a LocalProvider block, as its ``cancel`` would (with SIGTERM).

    Only while ``pid`` is still that block's shell (its command line names the block's script): never a reused pid,
    never our own group.
    """
    import psutil

    try:
        if not script or script not in " ".join(psutil.Process(pid).cmdline()):
            return
        pgid = os.getpgid(pid)
        if pgid != os.getpgrp():
            os.killpg(pgid, signal.SIGKILL)
    except (OSError, psutil.Error):
        pass


# -- the interchange's guard (runs in the interchange process) ---------------------------------------------
def _interchange_main(parent_pid: int) -> None:
    """Parsl's interchange main, in its own process group, ending with its parent or at SIGTERM."""
    import pickle

    os.setpgrp()
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # a background group may still write to the terminal
    stop: list[str] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.append("SIGTERM"))

    from .lean_import import parsl_without_extras

    with parsl_without_extras():  # the submit waits for this process: import only what an interchange uses
        from parsl.executors.high_throughput import interchange as ix
        from parsl.utils import setproctitle

    class GuardedInterchange(ix.Interchange):
        def process_command(self, *args, **kwargs):  # called at every turn of the interchange's loop
            if stop or os.getppid() != parent_pid:
                self._shut_down(stop[0] if stop else f"submit process {parent_pid} is gone")
            return super().process_command(*args, **kwargs)

        def _shut_down(self, why: str) -> None:
            ix.logger.warning("openastro guard: %s; telling the worker pools to shut down and exiting", why)
            try:
                for manager in list(self._ready_managers):
                    self.manager_sock.send_multipart([manager, ix.PKL_SHUTDOWN_CODE])
                self.zmq_context.destroy(linger=2000)  # let the SHUTDOWN messages leave
            except Exception:  # noqa: BLE001 - another Parsl version: the pools end on their heartbeat instead
                ix.logger.exception("openastro guard: could not tell the worker pools")
            os._exit(0)

    setproctitle("parsl: HTEX interchange")
    config = pickle.load(sys.stdin.buffer)
    if os.getppid() != parent_pid:  # the submit died while starting us
        os._exit(0)
    GuardedInterchange(**config).start()


if __name__ == "__main__":
    _interchange_main(int(sys.argv[1]))
