"""numpy values -> what ``json`` can write: the one cleaner every task's StructuredData output goes through."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

__all__ = ["finite_or_none", "jsonable"]


def finite_or_none(x: Any) -> float | None:
    """``float(x)``, or None when x is None, NaN or infinite (JSON has no NaN; a reader sees null)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def jsonable(obj: Any, *, nonfinite: Literal["null", "keep"] = "null") -> Any:
    """``obj`` with numpy scalars and arrays turned into plain Python, recursively through dicts (keys become
    strings), lists and tuples (which become lists).

    numpy and Python booleans -> bool, integers -> int, floats -> float; a NaN or infinite float becomes None
    (``nonfinite="null"``, so the output is strict JSON) or stays a float (``"keep"``: Python's json writes
    NaN / Infinity, which Python and astropy read back). Anything else is returned as it is.
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v, nonfinite=nonfinite) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, nonfinite=nonfinite) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist(), nonfinite=nonfinite)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if nonfinite == "keep" else finite_or_none(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
