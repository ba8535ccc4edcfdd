"""Register a minor-planet orbit file (MPCORB format) as the repository's ``mpcorb`` dataset.

The file is parsed and checked whole first (``astro.mpcorb``: a bad line is one error naming the file and
line, and nothing is written); then the table is written and registered in one transaction, replacing the
run's previous one only with ``replace``. ``mpcorb`` has no dimensions: one orbit set serves every exposure,
and ``alerts`` reads it as an optional prerequisite (docs/vetting.md).
"""

from __future__ import annotations

from astropy.table import Table

from ..astro.mpcorb import validate_orbits
from ..butler import Butler
from ..registry.refs import DatasetType
from .refcats import Registered, register_table

__all__ = ["MPCORB", "ORBITS_RUN", "register_orbits"]

MPCORB = DatasetType("mpcorb", (), "Table")
ORBITS_RUN = "orbits"


def register_orbits(butler: Butler, table: Table, *, run: str = ORBITS_RUN, replace: bool = False,
                    chain: str | None = "defaults") -> Registered:
    """Register ``table`` (``read_mpcorb``'s columns) as ``mpcorb`` in ``run`` and make ``chain`` search ``run``."""
    validate_orbits(table)
    return register_table(butler, MPCORB, {}, table, run=run, replace=replace, chain=chain,
                          taken=f"run {run!r} already has an orbit file", unit="orbits")
