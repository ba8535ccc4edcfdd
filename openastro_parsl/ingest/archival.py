"""Register archival light curves (TESS/Kepler FITS) and published transit-time tables as datasets, so the
light-curve and TTV pipelines run on them exactly as on the survey's own photometry.

A file's target gets a target record (and a field of its own name, since targets imply fields) from the
file's coordinates; its band is the mission (``TESS``, ``Kepler``)."""

from __future__ import annotations

from pathlib import Path

from ..butler import Butler
from ..errors import OpenAstroError
from ..registry.refs import DatasetRef, DatasetType
from .lightcurves import LightCurveFileError, read_mission_lightcurve, read_transit_times_csv, transit_times_tables

LIGHTCURVE = DatasetType("lightcurve", ("target", "band"), "Table")
TRANSIT_TIMES = DatasetType("transitTimes", ("target",), "Table")


def _ensure_target(butler: Butler, name: str, ra: float | None, dec: float | None, source: Path) -> None:
    reg = butler.registry
    if ra is None or dec is None:
        known = {r["name"] for r in reg.dimension_records("target")}
        if name not in known:
            raise OpenAstroError(f"{source}: target {name!r} has no coordinates in the file and is not in the "
                                 "registry; create it first or pass a known --target")
        return
    field = next((r["field"] for r in reg.dimension_records("target") if r["name"] == name), name)
    reg.sync_dimension_records("field", [{"name": field, "ra": ra, "dec": dec}])
    reg.sync_dimension_records("target", [{"name": name, "field": field, "ra": ra, "dec": dec, "kind": "transit_host"}])


def ingest_lightcurves(butler: Butler, files, run: str, target: str | None = None, flux: str = "pdcsap",
                       quality_bitmask: str = "default") -> list[DatasetRef]:
    """Read each mission light curve and register it as ``lightcurve`` (target x mission band) in ``run``."""
    refs = []
    butler.registry.register_dataset_type(LIGHTCURVE)
    for path in map(Path, files):
        try:
            table = read_mission_lightcurve(path, flux=flux, quality_bitmask=quality_bitmask)
        except LightCurveFileError as exc:
            raise OpenAstroError(str(exc)) from None
        name = target or str(table.meta["target"])
        table.meta["target"] = name
        _ensure_target(butler, name, table.meta.get("ra"), table.meta.get("dec"), path)
        band = str(table.meta["band"])
        butler.registry.sync_dimension_records("band", [{"name": band}])
        refs.append(butler.put(table, LIGHTCURVE, {"target": name, "band": band}, run=run))
    return refs


def ingest_transit_times(butler: Butler, path, run: str, target: str, planet: str | None = None,
                         time_offset: float | None = None) -> DatasetRef:
    """Register one planet's published transit times (CSV) as ``transitTimes`` of ``target`` in ``run``."""
    path = Path(path)
    try:
        tables = transit_times_tables(read_transit_times_csv(path, time_offset=time_offset))
    except LightCurveFileError as exc:
        raise OpenAstroError(str(exc)) from None
    if planet is None and len(tables) > 1:
        raise OpenAstroError(f"{path}: holds planets {sorted(tables)}; choose one with --planet")
    chosen = planet or next(iter(tables))
    if chosen not in tables:
        raise OpenAstroError(f"{path}: no planet {chosen!r}; planets: {sorted(tables)}")
    _ensure_target(butler, target, None, None, path)
    butler.registry.register_dataset_type(TRANSIT_TIMES)
    return butler.put(tables[chosen], TRANSIT_TIMES, {"target": target}, run=run)
