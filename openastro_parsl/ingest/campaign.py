"""A campaign from files: target and field records from CSV/ECSV, and fields from the raws' pointings.

Every command here reads and checks its whole input first (each bad row named by file and line), then writes
in one transaction, so a refused file leaves the registry as it was. Re-running updates the records whose values
changed (same name) and never duplicates one; see docs/campaign.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ..astro.match import angular_separation
from ..butler import Butler
from ..errors import OpenAstroError
from .tablefile import BadRows, FileTable, TableFileError, angles, read_table

KINDS = ("transit_host", "planet", "variable", "transient", "field_star")  # planet: one planet of a host (K2-24b)
TARGET_COLUMNS = ("name", "ra", "dec", "kind", "period", "epoch", "duration", "stellar_mass", "field")
# Other names a column may go by. No bare ``mass``: on a planet's row it would be the planet's own mass.
ALIASES = {"stellar_mass": ("stellar_mass_msun", "mstar", "m_star")}
FIELD_COLUMNS = ("name", "ra", "dec")
EPHEMERIS = ("period", "epoch", "duration")
STELLAR_MASS_RANGE = (0.01, 300.0)  # Msun: from brown-dwarf hosts to the most massive stars
_MASS_UNITS = ("", "msun", "solmass", "m_sun", "msol")
DEFAULT_FIELD_RADIUS_DEG = 0.5   # a target this close to a defined field's centre joins it
DEFAULT_CLUSTER_RADIUS_DEG = 0.25  # pointings this close to a cluster's centre are one field
UNASSIGNED = "unassigned"         # the field of frames whose header names none (ingest/translator.py)
JD_RANGE = (2_400_000.0, 2_600_000.0)  # an epoch must be a full Julian date (BJD_TDB), not BJD - 2450000
_TIME_UNITS = {"d": 1.0, "day": 1.0, "days": 1.0, "h": 1 / 24, "hour": 1 / 24, "hr": 1 / 24, "min": 1 / 1440}


@dataclass
class SyncReport:
    """What a define-* command did: counts per dimension and the fields it made."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    new_fields: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{dim}: {c['inserted']} inserted, {c['updated']} updated, {c['unchanged']} unchanged"
                 for dim, c in self.counts.items()]
        return "; ".join(parts)


def _kind(value: Any) -> str | None:
    text = str(value).strip().lower().replace("-", "_").replace(" ", "_")
    return text if text in KINDS else None


def _columns(table: FileTable, known: tuple[str, ...], required: tuple[str, ...],
             aliases: Mapping[str, tuple[str, ...]] | None = None) -> tuple[dict[str, str], list[str]]:
    """Known columns present (canonical -> as written; a column may go by an alias), and the file's other
    columns (ignored, said so). Two columns for one quantity are refused."""
    present = {}
    for k in known:
        found = [c for n in (k, *(aliases or {}).get(k, ())) if (c := table.find(n)) is not None]
        if len(found) > 1:
            raise TableFileError(f"{table.path}: columns {', '.join(found)} all give {k}; keep one")
        if found:
            present[k] = found[0]
    missing = [k for k in required if k not in present]
    if missing:
        raise TableFileError(f"{table.path}: missing column(s) {', '.join(missing)} (has "
                             f"{', '.join(table.columns) or 'none'}; expects {', '.join(known)})")
    others = [c for c in table.columns if c not in present.values()]
    return present, others


def _time_factor(table: FileTable, col: str) -> float:
    unit = table.units.get(col, "d").strip().lower()
    if unit not in _TIME_UNITS:
        raise TableFileError(f"{table.path}: column {col!r} has unit {unit!r}; use d, h or min")
    return _TIME_UNITS[unit]


def _names(table: FileTable, col: str, what: str, bad: BadRows) -> list[str | None]:
    """Record names: non-empty, each once in the file."""
    seen: dict[str, int] = {}
    out: list[str | None] = []
    for i, v in enumerate(table.cells(col)):
        name = None if v is None else str(v).strip()
        if not name:
            bad.add(table.where(i), f"{what} name is empty")
            out.append(None)
            continue
        if name in seen:
            bad.add(table.where(i), f"{what} {name!r} is already on {table.where(seen[name])}")
        seen.setdefault(name, i)
        out.append(name)
    return out


def _defined_fields(butler: Butler) -> dict[str, dict]:
    return {r["name"]: r for r in butler.registry.dimension_records("field")}


def nearest_field(fields: Mapping[str, Mapping[str, Any]], ra: float, dec: float, radius_deg: float) -> str | None:
    """The defined field whose centre is nearest (ra, dec), if within ``radius_deg``; fields without one are skipped."""
    named = [(n, r["ra"], r["dec"]) for n, r in sorted(fields.items()) if r.get("ra") is not None and r.get("dec") is not None]
    if not named:
        return None
    sep = angular_separation(ra, dec, np.array([x[1] for x in named]), np.array([x[2] for x in named]))
    best = int(np.argmin(sep))
    return named[best][0] if sep[best] <= radius_deg else None


# ----------------------------------------------------------------------------------------------------------
# targets


def read_targets(path: str | Path, butler: Butler, field_radius_deg: float = DEFAULT_FIELD_RADIUS_DEG
                 ) -> tuple[list[dict], list[dict], list[str]]:
    """Target records from a CSV/ECSV file, each with a field; raises TableFileError listing every bad row.

    Returns (target records, field records to create, notes). A target without a field keeps the one it already
    has, else joins the nearest defined field within ``field_radius_deg``, else gets a field of its own name
    centred on it.
    """
    table = read_table(path, ("csv", "ecsv"))
    cols, others = _columns(table, TARGET_COLUMNS, ("name", "ra", "dec", "kind"), ALIASES)
    notes = [f"ignored column(s): {', '.join(others)}"] if others else []
    bad = BadRows()
    for where, why in table.problems:
        bad.add(where, why)
    names = _names(table, cols["name"], "target", bad)
    ra = angles(table, cols["ra"], "ra", bad)
    dec = angles(table, cols["dec"], "dec", bad)
    kinds = []
    for i, v in enumerate(table.cells(cols["kind"])):
        k = None if v is None else _kind(v)
        if k is None:
            bad.add(table.where(i), f"kind {v!r} is not one of {', '.join(KINDS)}")
        kinds.append(k)
    eph = {k: table.floats(cols[k], k, bad) * _time_factor(table, cols[k]) for k in EPHEMERIS if k in cols}
    for i in range(len(table)):
        period, epoch, duration = (eph[k][i] if k in eph else np.nan for k in EPHEMERIS)
        if np.isfinite(period) and period <= 0:
            bad.add(table.where(i), f"period {period:g} d is not positive")
        if np.isfinite(epoch) and not JD_RANGE[0] < epoch < JD_RANGE[1]:
            bad.add(table.where(i), f"epoch {epoch:g} is not a full Julian date (BJD_TDB, e.g. 2459000.5)")
        if np.isfinite(duration) and (duration <= 0 or (np.isfinite(period) and duration >= period)):
            bad.add(table.where(i), f"duration {duration:g} d is not between 0 and the period")
    if "stellar_mass" in cols:
        eph["stellar_mass"] = _stellar_masses(table, cols["stellar_mass"], bad)
    universe = butler.universe
    lacking = [k for k in eph if k not in universe["target"].metadata and np.isfinite(eph[k]).any()]
    if lacking:
        raise TableFileError(f"{table.path}: this repository's dimension universe ({universe.name} "
                             f"v{universe.version}, a custom or read-only one) has no target {', '.join(lacking)}; "
                             "leave those columns out")
    fields = _defined_fields(butler)
    known_targets = {r["name"]: r for r in butler.registry.dimension_records("target")}
    given_fields: list[str | None] = [None] * len(table)
    if "field" in cols:
        for i, v in enumerate(table.cells(cols["field"])):
            if v is None:
                continue
            name = str(v).strip()
            if name not in fields:
                bad.add(table.where(i), f"field {name!r} is not defined (define it with `openastro-butler "
                                        f"define-fields`, or leave the cell empty to let the target get one)")
            given_fields[i] = name
    bad.raise_if_any(str(table.path))

    targets, new_fields = [], {}
    for i, maybe in enumerate(names):
        name = str(maybe)  # bad rows (no name) were refused above
        f = given_fields[i] or (known_targets.get(name) or {}).get("field") \
            or nearest_field(fields, ra[i], dec[i], field_radius_deg)
        if f is None:
            f = name
            if name not in fields:
                new_fields[name] = {"name": name, "ra": float(ra[i]), "dec": float(dec[i])}
        rec = {"name": name, "ra": float(ra[i]), "dec": float(dec[i]), "kind": kinds[i], "field": f}
        for k, values in eph.items():
            rec[k] = float(values[i]) if np.isfinite(values[i]) else None
        targets.append(rec)
    return targets, list(new_fields.values()), notes


def _stellar_masses(table: FileTable, col: str, bad: BadRows) -> np.ndarray:
    """Column ``col`` as stellar masses in Msun (NaN where empty); out-of-range values are bad rows."""
    unit = table.units.get(col, "").strip().lower().replace(" ", "")
    if unit not in _MASS_UNITS:
        raise TableFileError(f"{table.path}: column {col!r} has unit {unit!r}; stellar masses are in solar masses "
                             "(Msun / solMass)")
    values = table.floats(col, "stellar_mass", bad)
    lo, hi = STELLAR_MASS_RANGE
    for i, m in enumerate(values):
        if not np.isnan(m) and not lo <= m <= hi:  # inf too
            bad.add(table.where(i), f"stellar_mass {m:g} is not between {lo:g} and {hi:g} Msun")
    return values


def define_targets(butler: Butler, path: str | Path, field_radius_deg: float = DEFAULT_FIELD_RADIUS_DEG) -> SyncReport:
    """Insert or update the targets of ``path`` (and the fields made for them) in one transaction."""
    targets, new_fields, notes = read_targets(path, butler, field_radius_deg)
    reg = butler.registry
    report = SyncReport(notes=notes, new_fields=[f["name"] for f in new_fields])
    with reg.transaction() as c:
        if new_fields:
            report.counts["field"] = reg.update_dimension_records("field", new_fields, conn=c)
        report.counts["target"] = reg.update_dimension_records("target", targets, conn=c)
    return report


# ----------------------------------------------------------------------------------------------------------
# fields


def read_fields(path: str | Path) -> tuple[list[dict], list[str]]:
    """Field records (name, ra, dec) from a CSV/ECSV file; raises TableFileError listing every bad row."""
    table = read_table(path, ("csv", "ecsv"))
    cols, others = _columns(table, FIELD_COLUMNS, FIELD_COLUMNS)
    bad = BadRows()
    for where, why in table.problems:
        bad.add(where, why)
    names = _names(table, cols["name"], "field", bad)
    ra = angles(table, cols["ra"], "ra", bad)
    dec = angles(table, cols["dec"], "dec", bad)
    bad.raise_if_any(str(table.path))
    records = [{"name": n, "ra": float(a), "dec": float(d)} for n, a, d in zip(names, ra, dec, strict=True)]
    return records, ([f"ignored column(s): {', '.join(others)}"] if others else [])


def define_fields(butler: Butler, path: str | Path) -> SyncReport:
    """Insert or update the fields of ``path`` in one transaction."""
    records, notes = read_fields(path)
    report = SyncReport(notes=notes)
    report.counts["field"] = butler.registry.update_dimension_records("field", records)
    return report


@dataclass
class _Cluster:
    """Pointings within a radius of a running centre (a unit vector)."""

    vec: np.ndarray
    members: list[dict] = field(default_factory=list)

    @property
    def radec(self) -> tuple[float, float]:
        x, y, z = self.vec / np.linalg.norm(self.vec)
        return float(np.degrees(np.arctan2(y, x)) % 360.0), float(np.degrees(np.arcsin(np.clip(z, -1, 1))))


def _unit(ra: float, dec: float) -> np.ndarray:
    a, d = np.radians(ra), np.radians(dec)
    return np.array([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)])


def cluster_pointings(pointings: Iterable[dict], radius_deg: float) -> list[_Cluster]:
    """Group pointings (dicts with ra, dec) in their given order: each joins the nearest cluster whose centre is
    within ``radius_deg`` (the centre then moves to the members' mean), else starts one. Largest first."""
    clusters: list[_Cluster] = []
    for p in pointings:
        v = _unit(p["ra"], p["dec"])
        best, best_sep = None, radius_deg
        for c in clusters:
            ra, dec = c.radec
            sep = float(angular_separation(ra, dec, p["ra"], p["dec"]))
            if sep <= best_sep:
                best, best_sep = c, sep
        if best is None:
            clusters.append(_Cluster(v.copy(), [p]))
        else:
            best.vec = best.vec + v
            best.members.append(p)
    return sorted(clusters, key=lambda c: -len(c.members))


def position_name(ra: float, dec: float, prefix: str = "F") -> str:
    """A field name from its centre, ``F1641+3627`` (RA hhmm, Dec ±ddmm), as catalogues name sources."""
    h = int(round(ra / 15.0 * 60.0)) % (24 * 60)
    d = int(round(abs(dec) * 60.0))
    return f"{prefix}{h // 60:02d}{h % 60:02d}{'-' if dec < 0 else '+'}{d // 60:02d}{d % 60:02d}"


def fields_from_exposures(butler: Butler, radius_deg: float = DEFAULT_CLUSTER_RADIUS_DEG, where: str = "",
                          prefix: str = "F") -> SyncReport:
    """Field centres from the raw exposures' pointings (exposure ra/dec from their headers), in one transaction.

    A field the exposures name (from OBJECT) but that has no centre gets the mean pointing of its largest cluster;
    a field with a centre keeps it. Exposures in ``unassigned`` are clustered too: a cluster with no defined field
    within ``radius_deg`` becomes a new field named by its position (``F1641+3627``); the exposures stay in
    ``unassigned`` until they are moved to it.
    """
    reg = butler.registry
    exposures = [r for r in reg.dimension_records("exposure", where)
                 if r.get("ra") is not None and r.get("dec") is not None]
    exposures.sort(key=lambda r: (str(r["instrument"]), r["id"]))
    if not exposures:
        raise OpenAstroError("no exposures with a pointing (exposure ra/dec) to derive fields from"
                             + (f" matching {where!r}" if where else ""))
    fields = _defined_fields(butler)
    by_field: dict[str, list[dict]] = {}
    for r in exposures:
        by_field.setdefault(r["field"], []).append(r)
    report = SyncReport()
    records: list[dict] = []
    kept = 0
    for name in sorted(f for f in by_field if f != UNASSIGNED):
        rec = fields.get(name, {})
        if rec.get("ra") is not None and rec.get("dec") is not None:
            kept += 1
            continue
        clusters = cluster_pointings(by_field[name], radius_deg)
        ra, dec = clusters[0].radec
        records.append({"name": name, "ra": ra, "dec": dec})
        fields[name] = records[-1]
        stray = sum(len(c.members) for c in clusters[1:])
        if stray:
            report.notes.append(f"field {name}: {stray} of {len(by_field[name])} exposures point more than "
                                f"{radius_deg} deg from its centre ({ra:.4f}, {dec:.4f})")
    for c in cluster_pointings(by_field.get(UNASSIGNED, []), radius_deg):
        ra, dec = c.radec
        near = nearest_field(fields, ra, dec, radius_deg)
        if near is not None:
            report.notes.append(f"{len(c.members)} exposure(s) in {UNASSIGNED!r} point at field {near}")
            continue
        name = position_name(ra, dec, prefix)
        suffix = 2
        while name in fields:
            name, suffix = f"{position_name(ra, dec, prefix)}-{suffix}", suffix + 1
        records.append({"name": name, "ra": ra, "dec": dec})
        fields[name] = records[-1]
        report.new_fields.append(name)
        report.notes.append(f"{len(c.members)} exposure(s) in {UNASSIGNED!r} point at new field {name}")
    counts = reg.update_dimension_records("field", records) if records else \
        {"inserted": 0, "updated": 0, "unchanged": 0}
    counts["unchanged"] += kept
    report.counts["field"] = counts
    return report
