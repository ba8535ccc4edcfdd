"""Running graphs: site configs to Parsl, the submit loop, the worker-side runner, status, reports."""

from typing import Any

from .._lazy import lazy_exports

__all__ = [
    "ExecutorConfig", "PreflightError", "ProviderConfig", "RunLockedError", "STATES", "SiteConfig", "SiteError",
    "StatusStore", "Submission", "Summary", "failed_quanta", "load_site", "open_run", "parsl_config",
    "report_json", "run_quantum", "write_html",
]
_get = lazy_exports(__name__, {
    "site": ("ExecutorConfig", "ProviderConfig", "SiteConfig", "SiteError", "load_site", "parsl_config"),
    "preflight": ("PreflightError",),  # its function is execution.preflight.preflight (the module's own name)
    "runlock": ("RunLockedError",),
    "status": ("STATES", "StatusStore"),
    "submit": ("Submission", "Summary"),
    "report": ("failed_quanta", "open_run", "report_json", "write_html"),
    "runner": ("run_quantum",),
})


def __getattr__(name: str) -> Any:
    return _get(name)
