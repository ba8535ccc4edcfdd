"""`openastro-butler` commands for calibration frames and master calibrations."""

from __future__ import annotations

import click

from ..butler import Butler
from .butler import main
from .common import console, user_errors


@main.command("certify-calibrations")
@click.argument("repo", type=click.Path())
@click.argument("input_run")
@click.argument("calib_collection")
@click.option("--begin", required=True, help="First night (YYYYMMDD, exposure.day_obs) the masters are valid for.")
@click.option("--end", required=True, help="Last night (YYYYMMDD, inclusive).")
@click.option("--dataset-type", "dataset_types", multiple=True,
              help="Dataset type to certify (repeatable; default: masterBias, masterDark, masterFlat).")
@user_errors
def certify_calibrations_cmd(repo, input_run, calib_collection, begin, end, dataset_types) -> None:
    """Certify the masters of INPUT_RUN into CALIB_COLLECTION (CALIBRATION, made if new) for nights BEGIN-END.

    ISR then takes, per exposure, the master whose range holds the exposure's night: put CALIB_COLLECTION in
    the plan's inputs (-i) or in the chain they name. Nothing is written if any range overlaps one already
    certified in the collection for the same dataset type and data ID.
    """
    from ..registry.calibs import certify

    done = certify(Butler(repo).registry, input_run, calib_collection, begin=begin, end=end,
                   dataset_types=list(dataset_types) or None)
    for cert in done:
        console.print(f"certified {cert.describe()}")
    console.print(f"{len(done)} dataset(s) certified into {calib_collection} for nights {done[0].begin}-{done[0].end}")


@main.command("query-calibrations")
@click.argument("repo", type=click.Path())
@click.argument("collections")
@click.option("--dataset-type", "dataset_types", multiple=True,
              help="Dataset type (repeatable; default: masterBias, masterDark, masterFlat).")
@user_errors
def query_calibrations_cmd(repo, collections, dataset_types) -> None:
    """List what is certified in COLLECTIONS (comma-separated; chains expanded): dataset, nights, run."""
    from rich.table import Table

    from ..registry.calibs import CALIBRATION_TYPES, certified

    registry = Butler(repo).registry
    search = [c.strip() for c in collections.split(",") if c.strip()]
    registry.resolve_collections(search)  # an unknown collection is one line
    table = Table("dataset type", "data ID", "nights", "collection", "run")
    for name in list(dataset_types) or list(CALIBRATION_TYPES):
        for _, cert in certified(registry, name, search):
            table.add_row(name, cert.ref.data_id_str(), f"{cert.begin}-{cert.end}", cert.collection, cert.ref.run)
    console.print(table)
