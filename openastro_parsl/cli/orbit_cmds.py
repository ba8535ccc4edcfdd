"""`openastro-butler` commands for what transient alerts are vetted against: orbits, catalogued sources.

``ingest-orbits`` reads an MPCORB file (MPC's MPCORB.DAT[.gz], or any subset of its lines) on any machine, so
a cluster without a network vets alerts from a file fetched once elsewhere. docs/vetting.md describes it.
"""

from __future__ import annotations

import click
import numpy as np

from ..butler import Butler
from .butler import main
from .common import console, fetch_options, print_registered, register_options, user_errors

ARCHIVE_CACHE_HELP = ("Archive cache (SQLite); default $OPENASTRO_ARCHIVE_CACHE or "
                      "~/.cache/openastro_parsl/archive.sqlite.")
REFRESH_HELP = "Ask the archives again even for cached answers."
_orbit_options = register_options("orbits", "Replace the orbit file already in --run.")
_known_source_options = register_options("knownsources", "Replace the field's known sources already in --run.")


def _register_known_sources(butler: Butler, table, field_name: str, run: str, chain: str, replace: bool) -> None:
    from ..ingest.known_sources import register_known_sources

    done = register_known_sources(butler, table, field_name, run=run, replace=replace, chain=chain or None)
    kinds = ", ".join(f"{int(np.sum(table['kind'] == k))} {k}" for k in sorted(set(table["kind"])))
    print_registered(butler, done, f"knownSources {{field={field_name}}}: {done.n_rows} sources ({kinds})", run,
                     chain)


@main.command("ingest-orbits")
@click.argument("repo", type=click.Path())
@click.argument("file", type=click.Path(dir_okay=False))
@_orbit_options
@user_errors
def ingest_orbits_cmd(repo: str, file: str, run: str, chain: str, replace: bool) -> None:
    """Register a minor-planet orbit FILE in MPCORB format (.gz read directly) as the repository's `mpcorb`."""
    from ..astro.mpcorb import read_mpcorb
    from ..ingest.orbits import register_orbits

    butler = Butler(repo)
    table = read_mpcorb(file)  # every line checked before anything is written
    done = register_orbits(butler, table, run=run, replace=replace, chain=chain or None)
    epochs = sorted(set(float(e) for e in table["epoch_mjd"]))
    print_registered(butler, done, f"mpcorb: {done.n_rows} orbits", run, chain, f"; epochs MJD {epochs[0]:.1f}"
                     + (f"-{epochs[-1]:.1f}" if len(epochs) > 1 else "") + " (TT)")


@main.command("ingest-known-sources")
@click.argument("repo", type=click.Path())
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--field", "field_name", required=True, help="The field the sources are for.")
@_known_source_options
@user_errors
def ingest_known_sources_cmd(repo: str, file: str, field_name: str, run: str, chain: str, replace: bool) -> None:
    """Register a FILE of catalogued sources (name, ra, dec, kind [, radius_arcsec]) for a field's alerts.

    Galaxies flag candidates on them as host_galaxy; variables and quasars keep candidates from alerting.
    """
    from ..ingest.known_sources import read_known_sources
    from ..ingest.refcats import field_record

    butler = Butler(repo)
    field_record(butler, field_name)
    _register_known_sources(butler, read_known_sources(file), field_name, run, chain, replace)


@main.command("fetch-orbits")
@click.argument("repo", type=click.Path())
@click.option("--field", "fields", multiple=True, help="Bodies crossing this field (SkyBoT at its nights); repeatable.")
@click.option("--designations", default="", help="Bodies by number or designation, comma-separated (1,2019 RB21).")
@click.option("--epoch", "epochs", multiple=True,
              help="Date (ISO UTC or MJD) to search the field at, instead of its exposures' nights; repeatable.")
@click.option("--radius", type=float, default=0.5, show_default=True, help="Cone radius around the field (deg).")
@click.option("--location", default="500", show_default=True, help="Observatory code for SkyBoT (500: geocentre).")
@fetch_options(ARCHIVE_CACHE_HELP, REFRESH_HELP)
@click.option("--output", type=click.Path(dir_okay=False),
              help="MPCORB file to write (default: mpcorb/<fields>.dat beside the cache).")
@_orbit_options
@user_errors
def fetch_orbits_cmd(repo, fields, designations, epochs, radius, location, cache, offline, refresh, output, run,
                     chain, replace) -> None:
    """Fetch the orbits of the minor planets crossing a field (SkyBoT, then the MPC) and register them.

    Run it on a machine with a network: the answers land in the cache, an MPCORB file is written and registered
    as ingest-orbits registers one. Offline (--offline, or the archives unreachable) it answers from the cache.
    """
    from pathlib import Path

    from ..astro.mpcorb import read_mpcorb
    from ..ingest.archive_cache import ArchiveCache
    from ..ingest.orbit_fetch import fetch_orbits, parse_epoch
    from ..ingest.orbits import register_orbits

    butler = Butler(repo)
    got = fetch_orbits(butler, fields=tuple(fields), designations=tuple(d for d in designations.split(",") if d.strip()),
                       epochs=tuple(parse_epoch(e) for e in epochs), radius_deg=radius, location=location,
                       cache=cache, offline=offline, refresh=refresh)
    for note in got.notes:
        console.print(note)
    path = Path(output) if output else (ArchiveCache(cache).path.parent / "mpcorb" /
                                        f"{'+'.join(fields) or 'designations'}.dat")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(got.lines) + "\n")
    table = read_mpcorb(path)  # the file as ingest-orbits reads it
    done = register_orbits(butler, table, run=run, replace=replace, chain=chain or None)
    print_registered(butler, done, f"mpcorb: {done.n_rows} orbits ({path})", run, chain)


@main.command("fetch-known-sources")
@click.argument("repo", type=click.Path())
@click.option("--field", "field_name", required=True, help="The field the sources are for.")
@click.option("--catalog", "catalogs", multiple=True, type=click.Choice(["ned", "simbad"]), required=True,
              help="Catalogue to ask (repeatable: one dataset of both).")
@click.option("--radius", type=float, default=0.5, show_default=True, help="Cone radius around the field (deg).")
@click.option("--galaxy-radius", type=float, default=10.0, show_default=True,
              help="Radius (arcsec) of a galaxy the catalogue gives no size for.")
@fetch_options(ARCHIVE_CACHE_HELP, REFRESH_HELP)
@_known_source_options
@user_errors
def fetch_known_sources_cmd(repo, field_name, catalogs, radius, galaxy_radius, cache, offline, refresh, run, chain,
                            replace) -> None:
    """Fetch a field's catalogued galaxies, variables and quasars (NED, SIMBAD) and register them for its alerts.

    Run it on a machine with a network: the cone lands in the cache and the repository's knownSources, as
    ingest-known-sources registers a file. Offline (--offline, or the archive unreachable) it answers from the cache.
    """
    from ..ingest.catalog_fetch import fetch_known_sources

    butler = Butler(repo)
    got = fetch_known_sources(butler, field_name, tuple(catalogs), radius_deg=radius,
                              galaxy_radius_arcsec=galaxy_radius, cache=cache, offline=offline, refresh=refresh)
    for note in got.notes:
        console.print(note)
    _register_known_sources(butler, got.table, field_name, run, chain, replace)
