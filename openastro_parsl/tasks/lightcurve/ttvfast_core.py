"""TTVFast's transit times straight from its C core, into a numpy array sized for the model.

Why: the ``ttvfast`` package's Python entry point always returns 5 lists of 5000 Python objects (its fixed
event buffer), which is 0.25 ms of the ~0.55 ms a K2-24-sized likelihood call takes; the integration itself is
the rest. The package's extension module also exports the C function it wraps, ``TTVFast_main`` (TTVFast's
``status_t TTVFast_main(double *params, double dt, double Time, double total, int n_plan, CalcTransit *transit,
CalcRV *RV_struct, int nRV, int n_events, int input_flag)``), so this calls it through ctypes with a buffer of
as many events as the model can have. Where the symbol is missing (another build of the package), the
package's own entry point is used instead: same numbers, slower.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache

import numpy as np

__all__ = ["TRANSIT_DTYPE", "transit_events"]

# TTVFast's CalcTransit (transit.h): int planet; int epoch; double time, rsky, vsky (no padding: 32 bytes)
TRANSIT_DTYPE = np.dtype([("planet", np.int32), ("epoch", np.int32), ("time", np.float64), ("rsky", np.float64),
                          ("vsky", np.float64)])
_UNUSED = -2.0  # TTVFast's mark of a slot no event filled
# status_t (ttv_errors.h), in order from STATUS_OK = 0
_STATUS = (None, "input flag must be 0, 1 or 2", "more transit events than the buffer holds", None,
           "hyperbolic orbit", "too many planets", "Kepler step not converging (the step is too long)")
_MEMORY_ERROR = 2


@lru_cache(maxsize=1)
def _core():
    """ctypes handle of ``TTVFast_main`` in the ttvfast extension, or None where it is not exported."""
    from ttvfast import _ttvfast

    try:
        fn = ctypes.CDLL(_ttvfast.__file__).TTVFast_main
    except (OSError, AttributeError):
        return None
    dp = ctypes.POINTER(ctypes.c_double)
    fn.argtypes = [dp, ctypes.c_double, ctypes.c_double, ctypes.c_double, ctypes.c_int, ctypes.c_void_p,
                   ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def transit_events(params: np.ndarray, dt: float, start: float, total: float, n_plan: int,
                   n_events: int) -> np.ndarray:
    """TTVFast's transit events (``TRANSIT_DTYPE``; unfilled slots dropped) of Jacobi elements ``params``
    (G, stellar mass, then per planet mass, period, e, i, node, omega, mean anomaly: ``ttvfast.models``) from
    ``start`` to ``total`` with step ``dt``; ``n_events`` is a first guess of the buffer (doubled while short).

    ``ValueError`` for what TTVFast refuses (a hyperbolic orbit, a Kepler step that does not converge).
    """
    fn = _core()
    p = np.ascontiguousarray(params, dtype=np.float64)
    if fn is None:
        return _through_the_package(p, dt, start, total, n_plan)
    size = max(int(n_events), 8)
    while True:
        out = np.zeros(size, dtype=TRANSIT_DTYPE)
        out["time"] = _UNUSED
        status = fn(p.ctypes.data_as(ctypes.POINTER(ctypes.c_double)), dt, start, total, n_plan,
                    out.ctypes.data, None, 0, size, 0)
        if status == _MEMORY_ERROR and size < 10**6:
            size *= 4
            continue
        if status != 0:
            raise ValueError(f"TTVFast: {_STATUS[status] if 0 < status < len(_STATUS) else status}")
        return out[out["time"] != _UNUSED]


def _through_the_package(p: np.ndarray, dt: float, start: float, total: float, n_plan: int) -> np.ndarray:
    from ttvfast import _ttvfast

    try:
        positions, _ = _ttvfast._ttvfast([float(v) for v in p], dt, start, total, n_plan, 0, 0, None)
    except (SystemError, MemoryError) as exc:  # it sets an error and still returns its lists
        raise ValueError(f"TTVFast: {exc.__cause__ or exc}") from None
    out = np.zeros(len(positions[0]), dtype=TRANSIT_DTYPE)
    for name, column in zip(TRANSIT_DTYPE.names, positions, strict=True):
        out[name] = column
    return out[out["time"] != _UNUSED]
