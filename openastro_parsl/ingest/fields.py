"""Give frames that arrived without a field (no OBJECT, no pointing) the field they show, once they are solved.

A frame in field ``unassigned`` is planned alone: no co-add, light curve or template takes it. Its plate
solution says where it points; the nearest defined field (a field record with ra/dec) within a radius is where
it belongs. The exposure record implies the field, and every dataset row of the exposure carries that implied
value, so all of them change together, in one transaction; files are not moved, because datastore paths hold
only a data ID's identifying values (instrument, exposure), never the implied field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from sqlalchemy import and_

from ..astro.match import angular_separation
from ..astro.wcs import wcs_from_cards
from ..errors import OpenAstroError
from .ingest import read_header_checked
from .translator import UNASSIGNED


class FieldAssignError(OpenAstroError):
    """The assignment cannot be made as asked (nothing written)."""


@dataclass
class Assignment:
    instrument: str
    exposure: int
    field: str | None  # None: no defined field within the radius
    separation_deg: float
    centre: tuple[float, float]


@dataclass
class AssignReport:
    moved: list[Assignment] = field(default_factory=list)
    too_far: list[Assignment] = field(default_factory=list)
    unsolved: list[tuple[str, int, str]] = field(default_factory=list)  # instrument, exposure, why

    def summary(self) -> str:
        return (f"moved {len(self.moved)} exposure(s) to their nearest field, {len(self.too_far)} beyond the "
                f"radius, {len(self.unsolved)} without a usable plate solution")


def _centre(butler, ref, raw_collections: list[str]) -> tuple[float, float]:
    """Sky position of the frame's centre pixel through its solved WCS (the reference point when the raw,
    whose size gives the centre, cannot be found)."""
    solution = butler.get(ref)
    if solution.get("status") not in ("header", "solved") or not solution.get("wcs"):
        raise ValueError(f"plate solution status {solution.get('status')!r}")
    wcs = wcs_from_cards(solution["wcs"])
    did = {"instrument": ref.data_id["instrument"], "exposure": ref.data_id["exposure"]}
    raws = butler.registry.query_datasets("raw", raw_collections, data_id=did) if raw_collections else []
    if raws:
        header = read_header_checked(butler.path(raws[0]))
        x, y = (header["NAXIS1"] - 1) / 2.0, (header["NAXIS2"] - 1) / 2.0
    else:
        x, y = wcs.wcs.crpix[0] - 1, wcs.wcs.crpix[1] - 1
    ra, dec = wcs.pixel_to_world_values(x, y)
    return float(ra) % 360.0, float(dec)


def plan_assignments(butler, collections: Sequence[str], radius_deg: float = 1.0) -> AssignReport:
    """Which ``unassigned`` exposures go to which field, from their ``wcsSolution`` in ``collections``."""
    registry = butler.registry
    if radius_deg <= 0:
        raise FieldAssignError(f"--radius must be positive, got {radius_deg}")
    fields = [f for f in registry.dimension_records("field") if f.get("ra") is not None and f.get("dec") is not None
              and f["name"] != UNASSIGNED]
    if not fields:
        raise FieldAssignError("no field has a centre (ra, dec) in the registry: define the fields first")
    search = registry.resolve_collections(list(collections))
    inputs = [c for run in search for c in (registry.run_inputs(run) or [])]
    raw_collections = list(dict.fromkeys(search + registry.resolve_collections(inputs))) if inputs else search
    refs = registry.query_datasets("wcsSolution", search, f"field = '{UNASSIGNED}'")
    report = AssignReport()
    f_ra = np.array([f["ra"] for f in fields], dtype=float)
    f_dec = np.array([f["dec"] for f in fields], dtype=float)
    for ref in sorted(refs, key=lambda r: (r.data_id["instrument"], r.data_id["exposure"])):
        inst, exp = ref.data_id["instrument"], int(ref.data_id["exposure"])
        try:
            ra, dec = _centre(butler, ref, raw_collections)
        except (ValueError, KeyError, OpenAstroError) as exc:
            report.unsolved.append((inst, exp, str(exc).splitlines()[0]))
            continue
        sep = angular_separation(ra, dec, f_ra, f_dec)
        best = int(np.argmin(sep))
        a = Assignment(inst, exp, fields[best]["name"], float(sep[best]), (ra, dec))
        if a.separation_deg <= radius_deg:
            report.moved.append(a)
        else:
            report.too_far.append(Assignment(inst, exp, None, a.separation_deg, a.centre))
    return report


def apply_assignments(registry, moved: Sequence[Assignment]) -> int:
    """Move the exposures to their fields: the exposure records and every dataset row of those exposures, in
    one transaction. Returns the number of dataset rows updated."""
    if not moved:
        return 0
    for dt in registry.query_dataset_types("*"):
        if "exposure" in registry.universe.expanded(dt.dimensions) and "field" in registry.universe.required(dt.dimensions):
            raise FieldAssignError(f"dataset type {dt.name} has field among its identifying dimensions "
                                   f"{dt.dimensions}: its files are laid out by field, so exposures cannot move")
    exposure_t = registry.schema.dimensions["exposure"]
    dataset_t = registry.schema.dataset
    key = registry.universe["exposure"].key_name
    rows = 0
    with registry.transaction() as conn:
        for a in moved:
            where_exp = and_(exposure_t.c.instrument == a.instrument, exposure_t.c[key] == a.exposure,
                             exposure_t.c.field == UNASSIGNED)
            if conn.execute(exposure_t.update().where(where_exp).values(field=a.field)).rowcount != 1:
                raise FieldAssignError(f"exposure {{instrument={a.instrument}, exposure={a.exposure}}} is no longer "
                                       f"in field {UNASSIGNED}; nothing changed")
            rows += conn.execute(dataset_t.update().where(
                dataset_t.c.instrument == a.instrument, dataset_t.c.exposure == a.exposure,
                dataset_t.c.field == UNASSIGNED).values(field=a.field)).rowcount
    return rows
