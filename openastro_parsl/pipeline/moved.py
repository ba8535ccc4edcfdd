"""Where task modules went: dotted paths of earlier layouts -> where those classes live now.

Pipeline YAML and saved quantum graphs name every task by its dotted class path, and a graph saved before a
module moved must still run and resume after it. ``import_task`` therefore passes every path through
``current_path`` first. When a task module moves or is split, add its old dotted name here, pointing at a
module that still exports every class the old one had; never remove an entry (a saved graph, or a pipeline
file in someone's repository, may name it for years).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator

__all__ = ["MOVED_CLASSES", "MOVED_MODULES", "current_path", "old_module_names"]

_T = "openastro_parsl.tasks"

MOVED_MODULES: dict[str, str] = {
    # the flat tasks/ folder (until issue 13) -> one package per pipeline branch, helpers in openastro_parsl.astro
    f"{_T}.astrometry_fit": f"{_T}.astrometry.fit",
    f"{_T}.astrometry_net": f"{_T}.astrometry.net",
    f"{_T}.astrometry_quads": f"{_T}.astrometry.quads",
    f"{_T}.astrometry_sources": f"{_T}.astrometry.sources",
    f"{_T}.reproject": f"{_T}.image.reproject",
    f"{_T}.normalize": f"{_T}.image.normalize",
    f"{_T}.coadd": f"{_T}.image.coadd",
    f"{_T}.coadd_kernel": f"{_T}.image.coadd_kernel",
    f"{_T}.ensemble": f"{_T}.lightcurve.ensemble",
    f"{_T}.periodogram": f"{_T}.lightcurve.periodogram",
    f"{_T}.transit": f"{_T}.lightcurve.transit",
    f"{_T}.ttv": f"{_T}.lightcurve.ttv",
    f"{_T}.ttv_model": f"{_T}.lightcurve.ttv_model",
    f"{_T}.diffim": f"{_T}.transient.diffim",
    f"{_T}.realbogus": f"{_T}.transient.realbogus",
    f"{_T}.realbogus_training": f"{_T}.transient.training",
    f"{_T}.alerts": f"{_T}.transient.alerts",
    f"{_T}.refcat": "openastro_parsl.astro.refcat",
    f"{_T}.observation": "openastro_parsl.astro.observation",
    # unchanged paths (now packages re-exporting their classes): tasks.astrometry, tasks.photometry,
    # tasks.lightcurve, tasks.qa
}
"""Old module -> the module (or package) that now exports the same names."""

MOVED_CLASSES: dict[str, str] = {}
"""Old ``module.Class`` -> new ``module.Class``, for a class that moved or was renamed on its own."""


def current_path(path: str) -> str:
    """The dotted path a task class recorded as ``path`` has now (``path`` itself when it has not moved)."""
    if path in MOVED_CLASSES:
        return MOVED_CLASSES[path]
    module, _, name = path.rpartition(".")
    new = MOVED_MODULES.get(module)
    return f"{new}.{name}" if new else path


@contextlib.contextmanager
def old_module_names() -> Iterator[None]:
    """Make the old module names importable for the duration, as aliases of the new modules.

    For unpickling state saved before a move: a pickle names functions and classes by module (a TTV sampler
    checkpoint holds ``...tasks.ttv_model.active_loglike``).
    """
    added = []
    try:
        for old, new in MOVED_MODULES.items():
            if old not in sys.modules:
                sys.modules[old] = importlib.import_module(new)
                added.append(old)
        yield
    finally:
        for old in added:
            sys.modules.pop(old, None)
