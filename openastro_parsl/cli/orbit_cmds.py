"""`openastro-butler` commands for what transient alerts are vetted against: orbits, catalogued sources.

``ingest-orbits`` reads an MPCORB file (MPC's MPCORB.DAT[.gz], or any subset of its lines) on any machine, so
a cluster without a network vets alerts from a file fetched once elsewhere. docs/vetting.md describes it.
"""

from __future__ import annotations

import click
import numpy as np

from ..butler import Butler
from .butler import main
from .common import console, user_errors


@main.command("ingest-orbits")
@click.argument("repo", type=click.Path())
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--run", default="orbits", show_default=True, help="RUN collection to register into.")
@click.option("--chain", default="defaults", show_default=True,
              help="CHAINED collection made to search --run (new: raw/all then --run); '' for none.")
@click.option("--replace", is_flag=True, help="Replace the orbit file already in --run.")
@user_errors
def ingest_orbits_cmd(repo: str, file: str, run: str, chain: str, replace: bool) -> None:
    """Register a minor-planet orbit FILE in MPCORB format (.gz read directly) as the repository's `mpcorb`."""
    from ..astro.mpcorb import read_mpcorb
    from ..ingest.orbits import register_orbits

    butler = Butler(repo)
    table = read_mpcorb(file)  # every line checked before anything is written
    done = register_orbits(butler, table, run=run, replace=replace, chain=chain or None)
    epochs = sorted(set(float(e) for e in table["epoch_mjd"]))
    what = "replaced" if done.replaced else "registered"
    console.print(f"mpcorb: {done.n_rows} orbits {what} in run {run} ({butler.path(done.ref)}); epochs MJD "
                  f"{epochs[0]:.1f}" + (f"-{epochs[-1]:.1f}" if len(epochs) > 1 else "") + " (TT)")
    if done.chain is not None:
        console.print(f"chain {chain}: {', '.join(done.chain)}  (plan with -i {chain})")


@main.command("ingest-known-sources")
@click.argument("repo", type=click.Path())
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--field", "field_name", required=True, help="The field the sources are for.")
@click.option("--run", default="knownsources", show_default=True, help="RUN collection to register into.")
@click.option("--chain", default="defaults", show_default=True,
              help="CHAINED collection made to search --run (new: raw/all then --run); '' for none.")
@click.option("--replace", is_flag=True, help="Replace the field's known sources already in --run.")
@user_errors
def ingest_known_sources_cmd(repo: str, file: str, field_name: str, run: str, chain: str, replace: bool) -> None:
    """Register a FILE of catalogued sources (name, ra, dec, kind [, radius_arcsec]) for a field's alerts.

    Galaxies flag candidates on them as host_galaxy; variables and quasars keep candidates from alerting.
    """
    from ..ingest.known_sources import read_known_sources, register_known_sources
    from ..ingest.refcats import field_record

    butler = Butler(repo)
    field_record(butler, field_name)
    table = read_known_sources(file)
    done = register_known_sources(butler, table, field_name, run=run, replace=replace, chain=chain or None)
    kinds = ", ".join(f"{int(np.sum(table['kind'] == k))} {k}" for k in sorted(set(table["kind"])))
    console.print(f"knownSources {{field={field_name}}}: {done.n_rows} sources ({kinds}) "
                  f"{'replaced' if done.replaced else 'registered'} in run {run} ({butler.path(done.ref)})")
    if done.chain is not None:
        console.print(f"chain {chain}: {', '.join(done.chain)}  (plan with -i {chain})")
