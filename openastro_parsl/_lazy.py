"""Public names of a subpackage, imported from their module when first used (PEP 562).

Each framework subpackage lists its API in ``__all__`` and resolves it through ``lazy_exports``: a Parsl
worker importing ``openastro_parsl.execution.runner`` then does not load the submit loop, the planner and
SQLAlchemy as well, and no ``__init__`` can close an import cycle between subpackages.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_exports(package: str, modules: dict[str, tuple[str, ...]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` serving ``{submodule: (name, ...)}``."""
    where = {name: module for module, names in modules.items() for name in names}
    # A name that is also its module's (``combine`` in ``combine.py``) is bound at once: the import system sets
    # the package attribute to the submodule when that is first imported, which would hide the name for good.
    for name, module in where.items():
        if name == module:
            setattr(sys.modules[package], name, getattr(importlib.import_module(f"{package}.{module}"), name))

    def getattr_(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    return getattr_
