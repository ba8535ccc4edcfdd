"""`openastro-butler` commands that bring in light curves and transit times from files."""

from __future__ import annotations

import click

from ..butler import Butler
from .butler import main
from .common import console, user_errors


@main.command("ingest-lightcurves")
@click.argument("repo", type=click.Path())
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--run", default="lightcurves/archival", show_default=True, help="RUN collection to ingest into.")
@click.option("--target", help="Target name (default: the file's OBJECT).")
@click.option("--flux", type=click.Choice(["pdcsap", "sap"]), default="pdcsap", show_default=True)
@click.option("--quality", default="default", show_default=True, help="Quality bitmask: default | hard | hardest | none.")
@user_errors
def ingest_lightcurves_cmd(repo, files, run, target, flux, quality) -> None:
    """Register archival TESS/Kepler light-curve FITS FILES as `lightcurve` datasets (band = mission)."""
    from ..ingest.archival import ingest_lightcurves

    for ref in ingest_lightcurves(Butler(repo), files, run, target=target, flux=flux, quality_bitmask=quality):
        console.print(f"lightcurve {ref.data_id} -> {run}")


@main.command("ingest-transit-times")
@click.argument("repo", type=click.Path())
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--target", required=True, help="Target the times belong to (must exist in the registry).")
@click.option("--planet", help="Planet column value to take when the file holds several.")
@click.option("--time-offset", type=float, help="Added to every time (e.g. 2450000 for BJD-2450000).")
@click.option("--run", default="transits/published", show_default=True)
@user_errors
def ingest_transit_times_cmd(repo, csv_file, target, planet, time_offset, run) -> None:
    """Register a CSV of transit times (planet, epoch, time, error) as the target's `transitTimes`."""
    from ..ingest.archival import ingest_transit_times

    ref = ingest_transit_times(Butler(repo), csv_file, run, target, planet=planet, time_offset=time_offset)
    console.print(f"transitTimes {ref.data_id} -> {run}")
