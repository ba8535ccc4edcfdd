"""Import Parsl without the optional libraries it loads for features this project never configures.

``import parsl`` (and so every interchange, worker pool, pool manager and worker process Parsl starts) imports
its monitoring database module and its cloud providers, which load SQLAlchemy and boto3 whenever they are
installed: about half the cost of the import, paid four times in a row before a submit's first quantum can
start. While :func:`parsl_without_extras` is active those libraries look absent, as Parsl allows for (each
sits behind its own ``try: import ... except ImportError``); afterwards they import normally, so a task that
uses one still can. A library already imported is left alone.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import sys
from collections.abc import Iterator

# Parsl's optional imports: SQLAlchemy for the monitoring database, the rest for the cloud providers and
# executors (AWS, Azure, Google Cloud, Kubernetes, RADICAL, Globus Compute, TaskVine) no site config selects.
PARSL_EXTRAS = ("sqlalchemy", "boto3", "botocore", "azure", "msrestazure", "googleapiclient", "kubernetes",
                "radical", "globus_compute_sdk", "ndcctools")


class _Hide(importlib.abc.MetaPathFinder):
    def __init__(self, names: set[str]):
        self.names = names

    def find_spec(self, fullname, path, target=None):
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"{fullname} is hidden while Parsl imports", name=fullname)
        return None


@contextlib.contextmanager
def parsl_without_extras(names: tuple[str, ...] = PARSL_EXTRAS) -> Iterator[None]:
    """While active, importing one of ``names`` not imported yet fails as if it were not installed.

    In every thread of the process: use it around Parsl's import only.
    """
    finder = _Hide({n for n in names if n not in sys.modules})
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
