"""Catalogued sources of a field that alerts are vetted against: galaxies (a candidate on one is a possible
supernova: kept, flagged ``host_galaxy``), variables and quasars (a candidate on one is not news: not alerted).

A CSV/ECSV/FITS/Parquet file with ``name, ra, dec, kind`` and optionally ``radius_arcsec`` (a galaxy's extent;
default 10") — e.g. a SIMBAD or NED cone exported on a machine with a network — is validated whole (every bad row
named by file and line, nothing written) and registered as the field's ``knownSources`` dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.table import Table

from ..butler import Butler
from ..registry.refs import DatasetType
from .refcats import Registered, field_record, register_table
from .tablefile import BadRows, angles, read_table

__all__ = ["KINDS", "KNOWN_SOURCES", "KNOWN_SOURCES_RUN", "read_known_sources", "register_known_sources"]

KNOWN_SOURCES = DatasetType("knownSources", ("field",), "Table")
KNOWN_SOURCES_RUN = "knownsources"
KINDS = ("galaxy", "variable", "qso", "star", "other")
DEFAULT_GALAXY_RADIUS_ARCSEC = 10.0


def read_known_sources(path: str | Path) -> Table:
    """The file as a ``name, ra, dec, kind, radius_arcsec`` table; ``TableFileError`` listing every bad row."""
    ft = read_table(path)
    bad = BadRows()
    for where, why in ft.problems:
        bad.add(where, why)
    cols = {c: ft.find(c) for c in ("name", "ra", "dec", "kind", "radius_arcsec")}
    missing = [c for c in ("name", "ra", "dec", "kind") if cols[c] is None]
    if missing:
        bad.add(str(path), f"missing column(s) {', '.join(missing)} (have {', '.join(ft.columns)})")
        bad.raise_if_any(f"known sources {path}")
    ra = angles(ft, str(cols["ra"]), "ra", bad)
    dec = angles(ft, str(cols["dec"]), "dec", bad)
    names = [str(v).strip() if v is not None else "" for v in ft.cells(str(cols["name"]))]
    kinds = [str(v).strip().lower() if v is not None else "" for v in ft.cells(str(cols["kind"]))]
    radius = (ft.floats(str(cols["radius_arcsec"]), "radius_arcsec", bad) if cols["radius_arcsec"]
              else np.full(len(ft), np.nan))
    for i, (n, k) in enumerate(zip(names, kinds, strict=True)):
        if not n:
            bad.add(ft.where(i), "name is empty")
        if k not in KINDS:
            bad.add(ft.where(i), f"kind {k!r} is not one of {', '.join(KINDS)}")
        if np.isfinite(radius[i]) and radius[i] < 0:
            bad.add(ft.where(i), f"radius_arcsec {radius[i]} is negative")
    bad.raise_if_any(f"known sources {path}")
    radius = np.where(np.isfinite(radius), radius,
                      np.where(np.array(kinds) == "galaxy", DEFAULT_GALAXY_RADIUS_ARCSEC, 0.0))
    t = Table({"name": names, "ra": ra, "dec": dec, "kind": kinds, "radius_arcsec": radius})
    t.meta["source"] = Path(path).name
    return t


def register_known_sources(butler: Butler, table: Table, field_name: str, *, run: str = KNOWN_SOURCES_RUN,
                           replace: bool = False, chain: str | None = "defaults") -> Registered:
    """Register ``table`` as the ``knownSources`` of ``field_name`` in ``run`` (one transaction)."""
    field_record(butler, field_name)
    return register_table(butler, KNOWN_SOURCES, {"field": field_name}, table, run=run, replace=replace,
                          chain=chain, taken=f"run {run!r} already has known sources for field {field_name!r}",
                          unit="sources")
