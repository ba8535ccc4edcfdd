"""`openastro-butler` commands that set up a campaign: fields, targets and reference catalogues.

Each validates all of its input before it writes, writes in one transaction, and prints what it did (counts,
defaults it applied, where a catalogue came from). docs/campaign.md describes them.
"""

from __future__ import annotations

import click

from ..butler import Butler
from .butler import main
from .common import console, fetch_options, print_registered, register_options, user_errors


def _report(report) -> None:
    for note in report.notes:
        console.print(f"note: {note}")
    if report.new_fields:
        console.print(f"new field(s): {', '.join(report.new_fields)}")
    console.print(report.summary())


@main.command("define-targets")
@click.argument("repo", type=click.Path())
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--field-radius", type=float, default=0.5, show_default=True,
              help="A target without a field joins the nearest defined field within this many degrees "
                   "(else it gets a field of its own name).")
@user_errors
def define_targets_cmd(repo: str, file: str, field_radius: float) -> None:
    """Define or update targets from a CSV/ECSV FILE: name, ra, dec, kind [, period, epoch, ...].

    Optional columns: period, epoch, duration, stellar_mass, field.
    ra/dec in degrees or sexagesimal (RA in hours); kind one of transit_host, planet, variable, transient,
    field_star; period and duration in days, epoch a full BJD_TDB, stellar_mass in Msun (or a column mstar).
    Re-running updates changed rows.
    """
    from ..ingest.campaign import define_targets

    _report(define_targets(Butler(repo), file, field_radius))


@main.command("define-fields")
@click.argument("repo", type=click.Path())
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--from-exposures", is_flag=True,
              help="Derive fields from the raw exposures' pointings instead of a file.")
@click.option("--radius", type=float, default=0.25, show_default=True,
              help="--from-exposures: pointings within this many degrees of a centre are one field.")
@click.option("--where", "-d", default="", help="--from-exposures: only these exposures, e.g. \"instrument='lco1m'\".")
@user_errors
def define_fields_cmd(repo: str, file: str | None, from_exposures: bool, radius: float, where: str) -> None:
    """Define or update fields from a CSV/ECSV FILE (name, ra, dec), or --from-exposures."""
    from ..errors import OpenAstroError
    from ..ingest.campaign import define_fields, fields_from_exposures

    if bool(file) == from_exposures:
        raise OpenAstroError("give either a FILE of fields or --from-exposures (not both)")
    butler = Butler(repo)
    _report(fields_from_exposures(butler, radius, where) if from_exposures else define_fields(butler, str(file)))


def _refcat_options(fn):
    fn = register_options("refcats", "Replace the field's catalogue already in --run.")(fn)
    return click.option("--field", "field_name", required=True, help="The field the catalogue is for.")(fn)


def _registered(butler: Butler, field_name: str, table, notes, run: str, chain: str, replace: bool) -> None:
    from ..ingest.refcats import check_coverage, field_record, register_refcat

    check_coverage(table, field_record(butler, field_name))
    done = register_refcat(butler, table, field_name, run=run, replace=replace, chain=chain or None)
    for note in notes:
        console.print(f"note: {note}")
    print_registered(butler, done, f"refcat {{field={field_name}}}: {len(table)} stars", run, chain)


@main.command("ingest-refcat")
@click.argument("repo", type=click.Path())
@click.argument("file", type=click.Path(dir_okay=False))
@_refcat_options
@click.option("--columns", help="Map the file's column names: ra=RAJ2000,dec=DEJ2000,g=gmag,... "
                                "(names: id ra dec g r g_err r_err B V B_err V_err G BP RP G_err BP_err RP_err "
                                "pmra pmdec variable field).")
@click.option("--system", type=click.Choice(["sdss", "johnson", "gaia"]), default="sdss", show_default=True,
              help="Magnitudes in the file: SDSS g, r; Johnson B, V; or Gaia G, BP, RP (transformed to g, r).")
@click.option("--default-error", type=float, default=0.05, show_default=True,
              help="Error (mag) for magnitudes the file gives none.")
@user_errors
def ingest_refcat_cmd(repo, file, field_name, run, chain, replace, columns, system, default_error) -> None:
    """Register a catalogue FILE (ECSV, CSV, FITS, Parquet) as the reference catalogue of a field."""
    from ..ingest.refcats import field_record, read_catalogue

    butler = Butler(repo)
    field_record(butler, field_name)  # an unknown field first: it says which command defines one
    got = read_catalogue(file, field_name, system=system, columns=columns, default_error=default_error)
    _registered(butler, field_name, got.table, got.notes, run, chain, replace)


@main.command("fetch-refcat")
@click.argument("repo", type=click.Path())
@_refcat_options
@click.option("--radius", type=float, default=0.5, show_default=True, help="Cone radius around the field centre (deg).")
@click.option("--mag-limit", type=float, default=17.65, show_default=True, help="Faintest Gaia G.")
@fetch_options("Cone cache (SQLite); default $OPENASTRO_REFCAT_CACHE or ~/.cache/openastro_parsl/refcat.sqlite.",
               "Fetch again even if the cache holds the cone.")
@click.option("--server", help="Gaia archive URL (default $OPENASTRO_GAIA_SERVER, else ESA's).")
@user_errors
def fetch_refcat_cmd(repo, field_name, run, chain, replace, radius, mag_limit, cache, offline, refresh,
                     server) -> None:
    """Fetch a field's Gaia DR3 catalogue (SDSS g, r) on a machine with a network, cache it and register it."""
    from ..ingest.refcats import fetch_catalogue

    butler = Butler(repo)
    got = fetch_catalogue(butler, field_name, radius_deg=radius, mag_limit=mag_limit, cache=cache,
                          offline=offline, refresh=refresh, server=server)
    _registered(butler, field_name, got.table, got.notes, run, chain, replace)
