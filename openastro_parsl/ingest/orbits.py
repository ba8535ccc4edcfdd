"""Register a minor-planet orbit file (MPCORB format) as the repository's ``mpcorb`` dataset.

The file is parsed and checked whole first (``astro.mpcorb``: a bad line is one error naming the file and
line, and nothing is written); then the table is written and registered in one transaction, replacing the
run's previous one only with ``replace``. ``mpcorb`` has no dimensions: one orbit set serves every exposure,
and ``alerts`` reads it as an optional prerequisite (docs/vetting.md).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from astropy.table import Table

from ..astro.mpcorb import validate_orbits
from ..butler import Butler
from ..datastore.datastore import dataset_relpath
from ..errors import OpenAstroError
from ..registry.names import validate_collection_name
from ..registry.refs import CollectionType, DatasetRef, DatasetType
from .refcats import RAW_RUN, _chain_plan

__all__ = ["MPCORB", "ORBITS_RUN", "RegisteredOrbits", "register_orbits", "register_table"]

MPCORB = DatasetType("mpcorb", (), "Table")
ORBITS_RUN = "orbits"


@dataclass
class RegisteredOrbits:
    ref: DatasetRef
    n_orbits: int
    replaced: int
    chain: list[str] | None


def register_orbits(butler: Butler, table: Table, *, run: str = ORBITS_RUN, replace: bool = False,
                    chain: str | None = "defaults") -> RegisteredOrbits:
    """Register ``table`` (``read_mpcorb``'s columns) as ``mpcorb`` in ``run`` and make ``chain`` search ``run``."""
    validate_orbits(table)
    return register_table(butler, MPCORB, {}, table, run=run, replace=replace, chain=chain, what="an orbit file",
                          unit="orbits")


def register_table(butler: Butler, dataset_type: DatasetType, data_id: dict, table: Table, *, run: str,
                   replace: bool, chain: str | None, what: str, unit: str) -> RegisteredOrbits:
    """Write ``table`` as the one ``dataset_type`` dataset of ``data_id`` in ``run`` in one transaction (replacing
    the run's old one only with ``replace``) and make ``chain`` search ``run``."""
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
        key = "".join(f" for {k} {v!r}" for k, v in data_id.items())
        raise OpenAstroError(f"run {run!r} already has {what}{key} ({n} {unit}, {butler.path(old[0])}); pass "
                             "--replace to replace it")
    reg.register_dataset_type(dataset_type)
    reg.register_run(run)
    if children and RAW_RUN in children:
        reg.register_run(RAW_RUN)
    if chain and not reg.has_collection(chain):
        reg.register_collection(chain, CollectionType.CHAINED)
    fmt = butler.datastore.formatter(dataset_type.storage_class)
    final = dataset_relpath(run, dataset_type.name, tuple(data_id), data_id, fmt.extension)
    incoming = str(PurePosixPath(final).with_name(f".incoming-{uuid.uuid4().hex[:12]}-{PurePosixPath(final).name}"))
    loc = butler.datastore.write_at(table, incoming, fmt.name, what=what)
    aside: list[tuple[Path, Path]] = []
    try:
        with reg.transaction() as c:
            if old:
                reg.remove_datasets([o.id for o in old], c)
            ref = reg.insert_datasets(dataset_type, run, [(data_id, {**loc, "path": final})], c)[0]
            if children is not None:
                reg.set_chain(str(chain), children, conn=c)
            for o in old:
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
    return RegisteredOrbits(ref, len(table), len(old), children)
