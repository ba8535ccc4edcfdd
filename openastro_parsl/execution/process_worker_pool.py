"""``python -m openastro_parsl.execution.process_worker_pool ARGS``: Parsl's worker pool script, started lean.

Parsl's worker pool starts its multiprocessing manager and its workers with the ``spawn`` method: each is a
fresh interpreter that runs the pool's main module again before doing anything, so a local block imports all
of Parsl three times in a row before its first task. Run as this module, the pool and its workers import
Parsl without its unused extras (``lean_import``), then execute Parsl's own script, unchanged, in this
module's namespace: ``__main__.worker`` pickles and unpickles as multiprocessing expects, and the pool parses
the same arguments and behaves as Parsl's script does. The manager process imports no Parsl at all.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .lean_import import parsl_without_extras

POOL_MODULE = "parsl.executors.high_throughput.process_worker_pool"


def _needs_pool_script() -> bool:
    """Whether this process runs any of the pool script's code: all but the pool's multiprocessing manager.

    That manager is the standard library's ``SyncManager`` server (multiprocessing names its process
    ``SyncManager-N`` before spawning it): it runs no code of the pool's and holds plain dicts of task bytes,
    so importing Parsl there would only delay the pool, which waits for it before starting its workers.
    """
    if __name__ != "__mp_main__":
        return True
    import multiprocessing

    return not multiprocessing.current_process().name.startswith("SyncManager-")


if _needs_pool_script():
    with parsl_without_extras():
        __import__(POOL_MODULE)  # all of Parsl, now in sys.modules for the script below
    if __name__ in ("__main__", "__mp_main__"):  # the pool itself, or a worker it spawned
        _script = str(sys.modules[POOL_MODULE].__file__)
        exec(compile(Path(_script).read_text(), _script, "exec", dont_inherit=True))  # not our __future__ flags
