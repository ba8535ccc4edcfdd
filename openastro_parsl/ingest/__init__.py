"""Getting data in: raw frames through per-instrument header translators (with quarantine), and archival
light curves and transit times."""

from typing import Any

from .._lazy import lazy_exports

__all__ = [
    "IngestReport", "RAW", "Translator", "ingest_lightcurves", "ingest_raws", "ingest_transit_times",
    "load_translators", "read_mission_lightcurve", "read_transit_times", "read_transit_times_csv", "translate_header",
]
_get = lazy_exports(__name__, {
    "ingest": ("IngestReport", "RAW", "ingest_raws"),
    "archival": ("ingest_lightcurves", "ingest_transit_times"),
    "lightcurves": ("read_mission_lightcurve",),
    "transit_times": ("read_transit_times", "read_transit_times_csv"),
    "translator": ("Translator", "load_translators", "translate_header"),
})


def __getattr__(name: str) -> Any:
    return _get(name)
