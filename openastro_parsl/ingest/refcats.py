"""Reference catalogues without writing code: a catalogue file (any column names, SDSS or transformed magnitudes)
or a Gaia DR3 cone becomes the ``refcat`` dataset of a field, in RUN ``refcats`` and the ``defaults`` chain.

The whole file is checked first (each bad row named by file and line, or row for FITS/Parquet); the registry
rows and the file are then replaced together, so a refused or failed ingest leaves the repository as it was and
``--replace`` leaves no file behind. Worker nodes read the registered dataset: they never need the internet.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np
from astropy.table import Table

from ..astro.match import angular_separation
from ..astro.refcat import (
    GSPC_LIMIT_G,
    TRANSFORMATIONS,
    RefcatCache,
    RefcatError,
    gaia_dr3_fetch,
    query_refcat,
    to_sdss,
    validate_refcat,
)
from ..butler import Butler
from ..datastore.datastore import dataset_relpath
from ..errors import OpenAstroError
from ..registry.names import validate_collection_name
from ..registry.refs import CollectionType, DatasetRef, DatasetType
from .tablefile import BadRows, FileTable, TableFileError, angles, read_table

REFCAT = DatasetType("refcat", ("field",), "Table")
REFCAT_RUN = "refcats"
RAW_RUN = "raw/all"
DEFAULT_CHAIN = "defaults"        # raw/all then refcats: what `openastro-plan -i defaults` searches
DEFAULT_ERROR_MAG = 0.05          # an input magnitude without an error gets this one (said in the output)
DEFAULT_FETCH_RADIUS_DEG = 0.5    # fetch-refcat's cone around the field centre
MAX_FIELD_OFFSET_DEG = 1.0        # a catalogue with no star this close to the field's centre is the wrong one
SYSTEMS = ("sdss",) + tuple(TRANSFORMATIONS)
_SYSTEM_INPUTS = {"sdss": ("g", "r"), **{k: t.inputs for k, t in TRANSFORMATIONS.items()}}
# Canonical names --columns may map. Case matters for magnitudes (g is SDSS g, G is Gaia G).
COLUMN_NAMES = ("id", "ra", "dec", "pmra", "pmdec", "variable", "field", "g", "r", "g_err", "r_err",
                "B", "V", "B_err", "V_err", "G", "BP", "RP", "G_err", "BP_err", "RP_err",
                # a magnitude's signal-to-noise instead of its error (Gaia's phot_*_mean_flux_over_error)
                "g_snr", "r_snr", "B_snr", "V_snr", "G_snr", "BP_snr", "RP_snr")
_MAG_PER_SNR = 2.5 / np.log(10.0)  # sigma_mag = 1.0857 / (flux / flux_error)
_CASELESS = ("id", "ra", "dec", "pmra", "pmdec", "variable", "field")
_TRUE = {"1", "true", "t", "yes", "y", "variable"}
_FALSE = {"0", "false", "f", "no", "n", "not_available", "constant", ""}


@dataclass
class CatalogueRead:
    """A catalogue ready to register, and what was done to get it (printed by the CLI)."""

    table: Table
    notes: list[str] = field(default_factory=list)


def parse_column_map(text: str | None) -> dict[str, str]:
    """``ra=RAJ2000,dec=DEJ2000,g=gmag`` -> {canonical name: file column}."""
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise OpenAstroError(f"--columns: {item.strip()!r} is not name=column (e.g. ra=RAJ2000)")
        if key not in COLUMN_NAMES:
            raise OpenAstroError(f"--columns: unknown name {key!r}; names: {', '.join(COLUMN_NAMES)}")
        out[key] = value
    return out


def _resolve(table: FileTable, mapping: dict[str, str], names: tuple[str, ...]) -> dict[str, str]:
    """File columns for the canonical ``names``: as mapped, else the same name (any case for non-magnitudes)."""
    out = {}
    for name in names:
        if name in mapping:
            col = table.find(mapping[name])
            if col is None:
                raise TableFileError(f"{table.path}: --columns maps {name} to {mapping[name]!r}, which is not a "
                                     f"column (columns: {', '.join(table.columns)})")
            out[name] = col
        elif name in _CASELESS:
            if (col := table.find(name)) is not None:
                out[name] = col
        elif name in table.columns:
            out[name] = name
    return out


def _bools(table: FileTable, col: str, bad: BadRows) -> np.ndarray:
    out = np.zeros(len(table), bool)
    for i, v in enumerate(table.cells(col)):
        text = "" if v is None else str(v).strip().lower()
        if text in _TRUE:
            out[i] = True
        elif text not in _FALSE:
            bad.add(table.where(i), f"variable {v!r} is not true/false")
    return out


def read_catalogue(path: str | Path, field_name: str, *, system: str = "sdss", columns: str | None = None,
                   default_error: float = DEFAULT_ERROR_MAG) -> CatalogueRead:
    """A catalogue file as a validated reference catalogue for ``field_name`` (columns ``docs/datasets.md``).

    ``system`` names the magnitudes the file holds: ``sdss`` (g, r as they are), ``johnson`` (B, V) or ``gaia``
    (G, BP, RP), the latter two transformed to SDSS g, r (``astro/refcat.py``: reference, colour range, scatter).
    Rows of another field (a ``field`` column) are left out; rows outside the colour range, or without a
    magnitude, are dropped and counted; any other bad value refuses the file, listing each bad row.
    """
    if system not in SYSTEMS:
        raise OpenAstroError(f"unknown photometric system {system!r}; choose from {', '.join(SYSTEMS)}")
    if not default_error > 0:
        raise OpenAstroError(f"--default-error must be positive, got {default_error}")
    table = read_table(path)
    mapping = parse_column_map(columns)
    inputs = _SYSTEM_INPUTS[system]
    cols = _resolve(table, mapping, COLUMN_NAMES)
    missing = [n for n in ("ra", "dec", *inputs) if n not in cols]
    if missing:
        raise TableFileError(f"{table.path}: no column for {', '.join(missing)} (columns: "
                             f"{', '.join(table.columns)}); map them with --columns, e.g. "
                             f"--columns {','.join(f'{m}=<column>' for m in missing)}"
                             + ("" if system != "sdss" else "; or give --system johnson / gaia for B, V / G, BP, RP"))
    notes: list[str] = []
    bad = BadRows()
    for where, why in table.problems:
        bad.add(where, why)
    keep = np.ones(len(table), bool)
    if "field" in cols:
        values = [None if v is None else str(v).strip() for v in table.cells(cols["field"])]
        keep = np.array([v == field_name for v in values], bool)
        if not keep.any():
            found = sorted({v for v in values if v})
            raise TableFileError(f"{table.path}: no rows of field {field_name!r} in its {cols['field']!r} column "
                                 f"(fields there: {', '.join(found[:10]) or 'none'})")
        if not keep.all():
            notes.append(f"kept the {int(keep.sum())} rows of field {field_name} (of {len(table)})")
    ra = angles(table, cols["ra"], "ra", bad)
    dec = angles(table, cols["dec"], "dec", bad)
    mags = {n: table.floats(cols[n], n, bad) for n in inputs}
    errs = {}
    for n in inputs:
        name = f"{n}_err"
        if name in cols:
            e = table.floats(cols[name], name, bad)
            for i in np.flatnonzero(keep & (e <= 0)).tolist():
                bad.add(table.where(i), f"{name} {e[i]:g} is not positive")
            unknown = keep & ~np.isfinite(e) & np.isfinite(mags[n])
            if unknown.any():
                notes.append(f"{name}: {int(unknown.sum())} empty, set to {default_error} mag")
            errs[n] = np.where(np.isfinite(e), e, default_error)
        elif f"{n}_snr" in cols:
            snr = table.floats(cols[f"{n}_snr"], f"{n}_snr", bad)
            for i in np.flatnonzero(keep & (snr <= 0)).tolist():
                bad.add(table.where(i), f"{n}_snr {snr[i]:g} is not positive")
            with np.errstate(divide="ignore", invalid="ignore"):
                e = _MAG_PER_SNR / snr
            unknown = keep & ~np.isfinite(e) & np.isfinite(mags[n])
            if unknown.any():
                notes.append(f"{name}: {int(unknown.sum())} without {n}_snr, set to {default_error} mag")
            errs[n] = np.where(np.isfinite(e) & (snr > 0), e, default_error)
            notes.append(f"{name} = 1.0857 / {cols[f'{n}_snr']}")
        else:
            notes.append(f"{name}: no column, set to {default_error} mag (--default-error)")
            errs[n] = np.full(len(table), default_error)
    ids = None
    if "id" in cols:
        raw = table.floats(cols["id"], "id", bad)
        seen: dict[int, int] = {}
        for i in np.flatnonzero(keep).tolist():
            if not np.isfinite(raw[i]) or raw[i] != np.round(raw[i]) or abs(raw[i]) >= 2 ** 63:
                bad.add(table.where(i), f"id {table.cells(cols['id'])[i]!r} is not an integer")
                continue
            k = int(raw[i])
            if k in seen:
                bad.add(table.where(i), f"id {k} is already on {table.where(seen[k])}")
            seen.setdefault(k, i)
        ids = raw
    extras = {n: table.floats(cols[n], n, bad) for n in ("pmra", "pmdec") if n in cols}
    variable = _bools(table, cols["variable"], bad) if "variable" in cols else None
    if "field" in cols:  # only the kept field's rows matter
        bad.keep_only({table.where(i) for i in np.flatnonzero(keep).tolist()})
    bad.raise_if_any(f"{table.path}")

    if system == "sdss":
        g, r = mags["g"], mags["r"]
        g_err, r_err, inside = errs["g"], errs["r"], np.ones(len(table), bool)
    else:
        g, r, g_err, r_err, inside = to_sdss(system, mags, errs)
        t = TRANSFORMATIONS[system]
        notes.append(f"g, r from {system} {', '.join(t.inputs)}: {t.reference}; its scatter "
                     f"({t.scatter[0]}, {t.scatter[1]} mag) added to the errors")
    measured = np.isfinite(g) & np.isfinite(r)
    unmeasured = keep & ~measured
    if unmeasured.any():
        notes.append(f"dropped {int(unmeasured.sum())} row(s) without {' or '.join(inputs)}")
    outside = keep & measured & ~inside
    if outside.any():
        t = TRANSFORMATIONS[system]
        notes.append(f"dropped {int(outside.sum())} row(s) with {t.colour} outside {t.colour_range[0]}.."
                     f"{t.colour_range[1]}, where the transformation holds")
    use = keep & measured & inside
    if not use.any():
        raise TableFileError(f"{table.path}: no usable rows for field {field_name} ({'; '.join(notes)})")
    out = Table({
        "id": (ids[use] if ids is not None else np.flatnonzero(use) + 1).astype(np.int64),
        "ra": ra[use], "dec": dec[use], "g": g[use], "r": r[use], "g_err": g_err[use], "r_err": r_err[use],
    })
    if ids is None:
        notes.append("no id column: rows numbered from 1")
    for n, v in extras.items():
        out[n] = v[use]
    if system != "sdss":  # the catalogue's own magnitudes stay, for band_map to calibrate against them directly
        for n in inputs:
            out[n], out[f"{n}_err"] = mags[n][use], errs[n][use]
    if variable is not None:
        out["variable"] = variable[use]
    out["field"] = np.full(len(out), field_name)
    out.meta.update({"source": str(Path(path).resolve()), "system": system, "field": field_name})
    try:
        return CatalogueRead(validate_refcat(out, str(path)), notes)
    except RefcatError as exc:
        raise OpenAstroError(str(exc)) from None


# ----------------------------------------------------------------------------------------------------------
# registration


def field_record(butler: Butler, name: str) -> dict:
    """The field's record; a field not defined is one clear line naming the command that defines it."""
    rec = next((r for r in butler.registry.dimension_records("field") if r["name"] == name), None)
    if rec is None:
        raise OpenAstroError(f"field {name!r} is not defined in {butler.root}; define it first with "
                             f"`openastro-butler define-fields {butler.root} fields.csv` (or define-targets)")
    return rec


def check_coverage(table: Table, rec: dict, max_offset_deg: float = MAX_FIELD_OFFSET_DEG) -> None:
    """Refuse a catalogue with no star near the field's centre (when it has one): a wrong file or field."""
    if rec.get("ra") is None or rec.get("dec") is None or len(table) == 0:
        return
    sep = angular_separation(rec["ra"], rec["dec"], np.asarray(table["ra"]), np.asarray(table["dec"]))
    if float(np.min(sep)) > max_offset_deg:
        raise OpenAstroError(f"the catalogue does not cover field {rec['name']!r} (centre {rec['ra']:.4f}, "
                             f"{rec['dec']:.4f}): its nearest star is {float(np.min(sep)):.2f} deg away")


@dataclass
class Registered:
    ref: DatasetRef
    n_rows: int
    replaced: int
    chain: list[str] | None


def _chain_plan(butler: Butler, chain: str | None, run: str) -> list[str] | None:
    """The children ``chain`` gets: an existing chain gains ``run`` at its end (if it does not reach it yet); a new
    one is ``raw/all`` then ``run`` (``raw/all`` is made, empty, when the frames are not ingested yet, so the
    chain serves plans whichever comes first)."""
    if not chain:
        return None
    reg = butler.registry
    if reg.has_collection(chain):
        if reg.collection_type(chain) != CollectionType.CHAINED:
            raise OpenAstroError(f"--chain {chain!r} is a {reg.collection_type(chain).value} collection, not a "
                                 "CHAINED one; name another chain (or --chain '' for none)")
        children = list(next(c for c in reg.query_collections(chain) if c.name == chain).children)
        return children if run in reg.resolve_collections([chain]) else children + [run]
    validate_collection_name(chain, "CHAINED collection")
    return [RAW_RUN, run]


def register_refcat(butler: Butler, table: Table, field_name: str, *, run: str = REFCAT_RUN, replace: bool = False,
                    chain: str | None = DEFAULT_CHAIN) -> Registered:
    """Register ``table`` as the ``refcat`` of ``field_name`` in ``run``, and make ``chain`` search ``run``."""
    field_record(butler, field_name)
    return register_table(butler, REFCAT, {"field": field_name}, table, run=run, replace=replace, chain=chain,
                          taken=f"field {field_name!r} already has a refcat in run {run!r}", unit="stars")


def register_table(butler: Butler, dataset_type: DatasetType, data_id: dict, table: Table, *, run: str,
                   replace: bool, chain: str | None, taken: str, unit: str) -> Registered:
    """Write ``table`` as the one ``dataset_type`` dataset of ``data_id`` in ``run`` and make ``chain`` search
    ``run`` (refcats, orbit files, known sources).

    One the run already holds is refused (``taken``, with its ``unit`` count) unless ``replace``: then its registry
    row and file are swapped for the new ones in the same transaction (the old file is kept aside until the commit
    and restored if anything fails), so no file is left orphaned and no dataset loses its file.
    """
    reg = butler.registry
    validate_collection_name(run, "RUN collection")
    if reg.has_collection(run) and reg.collection_type(run) != CollectionType.RUN:
        raise OpenAstroError(f"--run {run!r} is a {reg.collection_type(run).value} collection, not a RUN")
    children = _chain_plan(butler, chain, run)
    old: list[DatasetRef] = []
    if reg.get_dataset_type(dataset_type.name, missing_ok=True) is not None and reg.has_collection(run):
        old = reg.query_datasets(dataset_type.name, [run], data_id=data_id)
    if old and not replace:
        n = len(butler.get(old[0]))
        raise OpenAstroError(f"{taken} ({n} {unit}, {butler.path(old[0])}); pass --replace to replace it")
    # Idempotent set-up first (a refused ingest above wrote nothing); then one transaction for the rest.
    reg.register_dataset_type(dataset_type)
    reg.register_run(run)
    if children and RAW_RUN in children:
        reg.register_run(RAW_RUN)
    if chain and not reg.has_collection(chain):
        reg.register_collection(chain, CollectionType.CHAINED)
    fmt = butler.datastore.formatter(dataset_type.storage_class)
    final = dataset_relpath(run, dataset_type.name, tuple(data_id), data_id, fmt.extension)
    incoming = str(PurePosixPath(final).with_name(f".incoming-{uuid.uuid4().hex[:12]}-{PurePosixPath(final).name}"))
    loc = butler.datastore.write_at(table, incoming, fmt.name, what=f"{dataset_type.name} {data_id}")
    aside: list[tuple[Path, Path]] = []
    try:
        with reg.transaction() as c:
            if old:
                reg.remove_datasets([o.id for o in old], c)
            ref = reg.insert_datasets(dataset_type, run, [(data_id, {**loc, "path": final})], c)[0]
            if children is not None:
                reg.set_chain(str(chain), children, conn=c)
            for o in old:  # files last, inside the transaction: a failure here rolls the registry back
                p = butler.path(o)
                if p.exists():
                    keep = p.with_name(f".replaced-{uuid.uuid4().hex[:12]}-{p.name}")
                    os.replace(p, keep)
                    aside.append((keep, p))
            os.replace(butler.datastore.abspath(incoming), butler.datastore.abspath(final))
    except BaseException:
        for keep, p in reversed(aside):
            os.replace(keep, p)
        butler.datastore.abspath(incoming).unlink(missing_ok=True)
        raise
    for keep, _ in aside:
        keep.unlink(missing_ok=True)
    return Registered(ref, len(table), len(old), children)


# ----------------------------------------------------------------------------------------------------------
# Gaia DR3


def fetch_catalogue(butler: Butler, field_name: str, *, radius_deg: float = DEFAULT_FETCH_RADIUS_DEG,
                    mag_limit: float = GSPC_LIMIT_G, cache: str | Path | None = None, offline: bool = False,
                    refresh: bool = False, server: str | None = None) -> CatalogueRead:
    """The Gaia DR3 cone (SDSS g, r from the synthetic photometry) around the field's centre, through the cache.

    Run it on a machine with a network (a login node): the cone lands in the cache and, registered, in the
    repository. Offline (``offline``, or the archive unreachable) it answers from the cache and says so.
    ``server``: another Gaia archive (default ``$OPENASTRO_GAIA_SERVER``, else ESA's).
    """
    rec = field_record(butler, field_name)
    if rec.get("ra") is None or rec.get("dec") is None:
        raise OpenAstroError(f"field {field_name!r} has no centre to fetch a catalogue around; give it one with "
                             f"`openastro-butler define-fields {butler.root} fields.csv`")
    if not 0 < radius_deg <= 5:
        raise OpenAstroError(f"--radius {radius_deg} deg: give a radius between 0 and 5 degrees")
    try:
        fetch = partial(gaia_dr3_fetch, server=server) if server else None
        table = query_refcat(rec["ra"], rec["dec"], radius_deg, cache=RefcatCache(cache), mag_limit=mag_limit,
                             offline=offline, refresh=refresh, fetch=fetch)
    except RefcatError as exc:
        raise OpenAstroError(str(exc)) from None
    source, path = table.meta.get("refcat_source"), table.meta.get("refcat_cache")
    if source == "offline-cache":
        why = table.meta.get("refcat_offline_reason", "")
        notes = [f"offline: from cache {path}" + (f" ({why})" if why and why != "--offline" else "")]
    elif source == "cache":
        notes = [f"from cache {path} (fetched earlier; --refresh to fetch again)"]
    else:
        notes = [f"fetched from the Gaia archive into cache {path}"]
    if len(table) == 0:
        raise OpenAstroError(f"Gaia DR3 has no stars with SDSS g, r (G < {mag_limit}) within {radius_deg} deg of "
                             f"field {field_name!r}; widen --radius")
    out = Table(table, copy=True)
    out["field"] = np.full(len(out), field_name)
    out.meta = {"source": "Gaia DR3 (gaiadr3.gaia_source + synthetic_photometry_gspc)", "system": "sdss",
                "field": field_name, "radius_deg": radius_deg, "mag_limit": mag_limit}
    return CatalogueRead(out, notes)
