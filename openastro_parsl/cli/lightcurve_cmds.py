"""`openastro-butler` commands that bring in light curves and transit times from files (docs/lightcurves.md)."""

from __future__ import annotations

import click

from ..butler import Butler
from ..errors import OpenAstroError
from ..ingest.campaign import KINDS
from ..ingest.lctime import SYSTEMS
from .butler import main
from .common import console, user_errors

TIME_SYSTEMS = ", ".join(SYSTEMS)
TARGET_KINDS = list(KINDS)  # as define-targets


def _site(text: str | None):
    from ..ingest.lctime import Site, TimeSystemError

    try:
        return Site.parse(text)
    except TimeSystemError as exc:
        raise OpenAstroError(str(exc)) from None


def _mapping(parse, text: str | None) -> dict:
    from ..ingest.lightcurves import LightCurveFileError

    try:
        return parse(text)
    except LightCurveFileError as exc:
        raise OpenAstroError(str(exc)) from None


@main.command("ingest-lightcurves")
@click.argument("repo", type=click.Path())
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--run", default="lightcurves/archival", show_default=True, help="RUN collection to ingest into.")
@click.option("--target", help="Target name (FITS: default the file's OBJECT; tables: required).")
@click.option("--format", "fmt", type=click.Choice(["auto", "fits", "csv", "ecsv", "aavso"]), default="auto",
              show_default=True, help="File format; auto looks at the file.")
@click.option("--columns", help="Table columns: time=COL,mag=COL|flux=COL,err=COL[,band=COL][,instrument=COL].")
@click.option("--time-system", help=f"Time system of the table's time column: {TIME_SYSTEMS}.")
@click.option("--time-offset", type=float, default=0.0, help="Added to every time first (e.g. 2450000 for "
              "HJD-2450000).")
@click.option("--site", help="Observer LAT,LON[,ELEV_M] for JD/MJD/HJD times (default: the geocentre).")
@click.option("--band", help="Band of every row of a table without a band column.")
@click.option("--band-map", help="File band -> survey band, e.g. SG=g,SR=r (AAVSO's Sloan names map by default).")
@click.option("--instrument", help="Instrument of every row of a table without an instrument column "
              "(default: the file name).")
@click.option("--ra", type=float, help="Target RA (deg), for a target not yet in the registry.")
@click.option("--dec", type=float, help="Target Dec (deg), with --ra.")
@click.option("--kind", type=click.Choice(TARGET_KINDS), default="transit_host", show_default=True,
              help="Kind of a target made here; transitSearch runs on transit_host.")
@click.option("--flux", type=click.Choice(["pdcsap", "sap"]), default="pdcsap", show_default=True,
              help="TESS/Kepler flux column.")
@click.option("--quality", default="default", show_default=True,
              help="TESS/Kepler quality bitmask: default | hard | hardest | none.")
@user_errors
def ingest_lightcurves_cmd(repo, files, run, target, fmt, columns, time_system, time_offset, site, band, band_map,
                           instrument, ra, dec, kind, flux, quality) -> None:
    """Register light-curve FILES (TESS/Kepler FITS, CSV/ECSV, AAVSO downloads) as `lightcurve` datasets.

    One dataset per target and band; every file is checked before anything is written.
    """
    from ..ingest.archival import ingest_lightcurves
    from ..ingest.lcformats import parse_band_map, parse_columns

    if (ra is None) != (dec is None):
        raise OpenAstroError("--ra and --dec go together")
    result = ingest_lightcurves(Butler(repo), files, run, target=target, flux=flux, quality_bitmask=quality, fmt=fmt,
                                columns=_mapping(parse_columns, columns), time_system=time_system,
                                time_offset=time_offset, site=_site(site), band=band,
                                band_map=_mapping(parse_band_map, band_map), instrument=instrument, ra=ra, dec=dec,
                                kind=kind)
    for note in result.notes:
        console.print(note)
    for ref in result.refs:
        console.print(f"lightcurve {ref.data_id} -> {run}")
    console.print(f"plan them with: openastro-plan -b {repo} -p pipelines/openastro.yaml#archival -i {run} -o u/NAME/RUN")


@main.command("ingest-transit-times")
@click.argument("repo", type=click.Path())
@click.argument("table_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--target", required=True, help="Host star the times belong to (in the registry, or with --ra/--dec).")
@click.option("--planet", help="Take only this planet; it is stored under --target. Without it a file of several "
              "planets gives one target per planet (TARGET + planet, e.g. K2-24b).")
@click.option("--time-system", help=f"Time system of the mid-times: {TIME_SYSTEMS} (default: from the column name; "
              "full Julian dates under a neutral name are BJD_TDB).")
@click.option("--time-offset", type=float, default=0.0, help="Added to every time first (e.g. 2450000).")
@click.option("--duplicates", type=click.Choice(["refuse", "combine"]), default="refuse", show_default=True,
              help="The same planet and epoch twice: refuse (naming the lines) or combine (inverse-variance mean).")
@click.option("--max-dq", type=int, help="Skip rows whose data quality (ETD's DQ, 1 best .. 5 worst) is above this.")
@click.option("--ra", type=float, help="Host RA (deg), for a target not yet in the registry.")
@click.option("--dec", type=float, help="Host Dec (deg), with --ra.")
@click.option("--site", help="Observer LAT,LON[,ELEV_M] for JD/MJD/HJD times (default: the geocentre).")
@click.option("--run", default="transits/published", show_default=True)
@user_errors
def ingest_transit_times_cmd(repo, table_file, target, planet, time_system, time_offset, duplicates, max_dq, ra, dec,
                             site, run) -> None:
    """Register a table of transit times (CSV, ETD export, a paper's table) as `transitTimes`."""
    from ..ingest.archival import ingest_transit_times

    if (ra is None) != (dec is None):
        raise OpenAstroError("--ra and --dec go together")
    result = ingest_transit_times(Butler(repo), table_file, run, target, planet=planet, time_offset=time_offset,
                                  time_system=time_system, duplicates=duplicates, max_dq=max_dq, ra=ra, dec=dec,
                                  site=_site(site))
    for note in result.notes:
        console.print(note)
    for ref in result.refs:
        console.print(f"transitTimes {ref.data_id} -> {run}")
