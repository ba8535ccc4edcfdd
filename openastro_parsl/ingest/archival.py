"""Register light curves and transit-time tables from files as datasets, so the light-curve and TTV pipelines
run on them exactly as on the survey's own photometry (docs/lightcurves.md).

Light curves: TESS/Kepler FITS (band = mission), CSV/ECSV with a column mapping and AAVSO downloads (one
dataset per band; ``lcformats``). Transit times: ``transit_times``. Every file is read and checked first;
only then are the files written and the registry changed, in one transaction, so a bad row anywhere leaves
the repository as it was.

Targets: a file's target is taken from the registry when it is there (``openastro-butler define-targets``),
else made from the file's coordinates or ``ra``/``dec`` (a target record and a field of its own name, since
targets imply fields). Several files of one target and band become one light curve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import Table, vstack

from ..butler import Butler
from ..errors import OpenAstroError
from ..registry.refs import DatasetRef, DatasetType
from .lcformats import describe_skips, detect_format, read_observations
from .lctime import Site
from .lightcurves import LightCurveFileError, read_mission_lightcurve, table_lightcurves
from .transit_times import read_transit_times, transit_times_tables

LIGHTCURVE = DatasetType("lightcurve", ("target", "band"), "Table")
TRANSIT_TIMES = DatasetType("transitTimes", ("target",), "Table")
DEFINE_TARGETS = "`openastro-butler define-targets REPO FILE`"


@dataclass
class Ingested:
    """What an ingest registered, and one line per file on what it skipped."""

    refs: list[DatasetRef] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class _Targets:
    """Target and field records the ingest needs: the registry's, or new ones checked before anything is written."""

    def __init__(self, butler: Butler):
        self.known = {r["name"]: r for r in butler.registry.dimension_records("target")}
        self.new: dict[str, dict] = {}

    def coords(self, name: str) -> tuple[float | None, float | None]:
        rec = self.known.get(name) or self.new.get(name)
        return (rec.get("ra"), rec.get("dec")) if rec else (None, None)

    def require(self, name: str, ra: float | None, dec: float | None, kind: str, source: Path,
                field_name: str | None = None) -> tuple[float | None, float | None]:
        """The target's (ra, dec); a new record when it is unknown and coordinates are given."""
        rec = self.known.get(name) or self.new.get(name)
        if rec is not None:
            if ra is not None and rec.get("ra") is not None and (
                    abs(rec["ra"] - ra) > 1e-4 or abs(rec["dec"] - dec) > 1e-4):
                raise OpenAstroError(f"{source}: target {name!r} is at ra {rec['ra']:.5f} dec {rec['dec']:+.5f} in "
                                     f"the registry, but the file or --ra/--dec say {ra:.5f} {dec:+.5f}")
            return rec.get("ra"), rec.get("dec")
        if ra is None or dec is None:
            raise OpenAstroError(f"{source}: target {name!r} is not in the registry and the file gives no "
                                 f"coordinates; pass --ra/--dec or define it first with {DEFINE_TARGETS}")
        if not (0 <= ra < 360 and -90 <= dec <= 90):
            raise OpenAstroError(f"{source}: target {name!r}: ra {ra} / dec {dec} out of range")
        self.new[name] = {"name": name, "field": field_name or name, "ra": float(ra), "dec": float(dec),
                          "kind": kind}
        return ra, dec

    def records(self) -> tuple[list[dict], list[dict]]:
        fields = {r["field"]: {"name": r["field"], "ra": r["ra"], "dec": r["dec"]} for r in self.new.values()
                  if r["field"] == r["name"]}
        return list(fields.values()), list(self.new.values())


def _write(butler: Butler, run: str, items: list[tuple[DatasetType, dict, Table]], targets: _Targets,
           bands: set[str]) -> list[DatasetRef]:
    """Refuse datasets the run already holds, then write every file and register everything in one transaction."""
    reg = butler.registry
    for dt, data_id, _ in items:
        if reg.get_dataset_type(dt.name, missing_ok=True) is None or not reg.has_collection(run):
            continue
        if data_id["target"] not in targets.known:
            continue
        existing = reg.query_datasets(dt.name, [run], data_id=data_id)
        if existing:
            raise OpenAstroError(f"{dt.name} {data_id} already exists in run {run!r}; ingest into another --run")
    fields, target_records = targets.records()
    for dt in {dt.name: dt for dt, _, _ in items}.values():
        reg.register_dataset_type(dt)  # a definition, no data; insert_datasets looks types up outside the transaction
    written: list[dict] = []
    refs: list[DatasetRef] = []
    try:
        with reg.transaction() as conn:
            reg.register_run(run, conn=conn)
            reg.sync_dimension_records("field", fields, conn)
            reg.sync_dimension_records("target", target_records, conn)
            reg.sync_dimension_records("band", [{"name": b} for b in sorted(bands)], conn)
            for dt, data_id, obj in items:
                full = reg.expand_data_id(dt.dimensions, data_id, conn)
                key_dims = reg.universe.required(dt.dimensions)
                loc = butler.datastore.write(obj, dataset_type=dt.name, storage_class=dt.storage_class,
                                             key_dims=key_dims, data_id=full, run=run)
                written.append(loc)
                refs.extend(reg.insert_datasets(dt, run, [(full, loc)], conn))
    except BaseException:
        for loc in written:
            butler.datastore.remove(loc["path"])
        raise
    return refs


def _merge(tables: list[Table]) -> Table:
    if len(tables) == 1:
        return tables[0]
    merged = vstack(tables, join_type="inner", metadata_conflicts="silent")
    merged = merged[np.argsort(np.asarray(merged["time"]), kind="stable")]
    merged.meta = dict(tables[0].meta)
    merged.meta["source_file"] = [t.meta.get("source_file") for t in tables]
    return merged


def ingest_lightcurves(butler: Butler, files, run: str, target: str | None = None, flux: str = "pdcsap",
                       quality_bitmask: str = "default", *, fmt: str = "auto", columns: dict | None = None,
                       time_system: str | None = None, time_offset: float = 0.0, site: Site | None = None,
                       band: str | None = None, band_map: dict | None = None, instrument: str | None = None,
                       ra: float | None = None, dec: float | None = None, kind: str = "transit_host") -> Ingested:
    """Read every file, then register one ``lightcurve`` per (target, band) in ``run`` (module docstring)."""
    from .lcformats import AAVSO_BANDS

    targets = _Targets(butler)
    per_key: dict[tuple[str, str], list[Table]] = {}
    notes = []
    for path in map(Path, files):
        try:
            kind_of_file = detect_format(path) if fmt == "auto" else fmt
            if kind_of_file == "fits":
                table = read_mission_lightcurve(path, flux=flux, quality_bitmask=quality_bitmask)
                name = target or str(table.meta["target"])
                file_ra, file_dec = table.meta.get("ra"), table.meta.get("dec")
                t_ra, t_dec = targets.require(name, file_ra if ra is None else ra, file_dec if dec is None else dec,
                                              kind, path)
                table.meta.update({"target": name, "ra": t_ra, "dec": t_dec})
                tables = {str(table.meta["band"]): table}
            else:
                if not target:
                    raise OpenAstroError(f"{path}: a table file names no target; pass --target")
                obs = read_observations(path, kind_of_file, columns or {}, band=band, instrument=instrument)
                t_ra, t_dec = targets.require(target, ra, dec, kind, path)
                name = target
                mapping = {**(AAVSO_BANDS if obs.fmt == "aavso" else {}), **(band_map or {})}
                tables = table_lightcurves(obs, target=name, ra=t_ra, dec=t_dec, time_system=time_system,
                                           time_offset=time_offset, site=site, band_map=mapping)
                if describe_skips(obs):
                    notes.append(f"{path}: {describe_skips(obs)}")
        except LightCurveFileError as exc:
            raise OpenAstroError(str(exc)) from None
        for b, t in tables.items():
            per_key.setdefault((name, b), []).append(t)
    items = [(LIGHTCURVE, {"target": n, "band": b}, _merge(ts)) for (n, b), ts in per_key.items()]
    refs = _write(butler, run, items, targets, {b for _, b in per_key})
    return Ingested(refs, notes)


def planet_target(host: str, planet: str) -> str:
    """The target a planet's transit times go to when a file holds several: ``K2-24`` + ``b`` -> ``K2-24b``."""
    p = "".join(planet.split())
    return p if p.lower().startswith("".join(host.split()).lower()) else f"{host}{p}"


def ingest_transit_times(butler: Butler, path, run: str, target: str, planet: str | None = None,
                         time_offset: float | None = None, *, time_system: str | None = None,
                         duplicates: str = "refuse", max_dq: int | None = None, ra: float | None = None,
                         dec: float | None = None, site: Site | None = None) -> Ingested:
    """Register a transit-time table as ``transitTimes``: under ``target`` for one planet (or ``planet``), and
    under one target per planet (``planet_target``, same sky position, kind ``planet``) for several."""
    path = Path(path)
    targets = _Targets(butler)
    t_ra, t_dec = targets.require(target, ra, dec, "transit_host", path)
    try:
        table = read_transit_times(path, time_system=time_system, time_offset=time_offset or 0.0,
                                   duplicates=duplicates, max_dq=max_dq, planet=planet, ra=t_ra, dec=t_dec, site=site)
        planets = sorted(set(table["planet"].tolist()))
        if planet is not None and planet not in planets:
            raise LightCurveFileError(f"{path}: no planet {planet!r} (--planet); planets: {', '.join(planets)}")
        tables = transit_times_tables(table if planet is None else table[table["planet"] == planet])
    except LightCurveFileError as exc:
        raise OpenAstroError(str(exc)) from None
    host = targets.known.get(target) or targets.new[target]
    items = []
    for p, t in tables.items():
        name = target if len(tables) == 1 else planet_target(target, p)
        if name != target:
            targets.require(name, t_ra, t_dec, "planet", path, field_name=host["field"])
        t.meta["target"] = name
        items.append((TRANSIT_TIMES, {"target": name}, t))
    refs = _write(butler, run, items, targets, set())
    notes = []
    if table.meta.get("n_skipped_dq"):
        notes.append(f"{path}: {table.meta['n_skipped_dq']} rows above --max-dq {max_dq} skipped")
    for c in table.meta.get("combined", []):
        notes.append(f"{path}: planet {c['planet']} epoch {c['epoch']}: lines {c['lines']} combined "
                     f"(chi2 {c['chi2']:.2f})")
    return Ingested(refs, notes)
