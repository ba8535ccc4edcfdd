"""`openastro-butler` commands for calibration frames and master calibrations."""

from __future__ import annotations

from pathlib import Path

import click

from ..butler import Butler
from ..errors import OpenAstroError
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


@main.command("colour-terms")
@click.argument("repo", type=click.Path())
@click.option("--collections", required=True, help="Comma-separated collections holding fieldZeropoints.")
@click.option("--where", "-d", default="", help="Constraint on the fields, e.g. \"field IN ('m67')\".")
@click.option("--colour-index", help="Only colour terms against this catalogue colour (e.g. g-r); needed when "
              "the fits used several.")
@click.option("--write", "out", type=click.Path(dir_okay=False), help="Save them as a config override file for "
              "fieldCalibration (plan with -C fieldCalibration:FILE).")
@user_errors
def colour_terms_cmd(repo, collections, where, colour_index, out) -> None:
    """Each instrument x band's colour term, pooled over the fields fitted in COLLECTIONS.

    Prints each field's value and the weighted mean; --write saves them as the config that makes
    fieldCalibration take them as known on other fields (a standard field such as M67 measures them in one
    night; docs/zeropoints.md).
    """
    from rich.table import Table

    from ..tasks.photometry.colour_terms import override_file, pool_colour_terms

    butler = Butler(repo)
    known = butler.registry.query_dataset_types("fieldZeropoints")
    refs = butler.query_datasets("fieldZeropoints", collections, where) if known else []
    if not refs:
        raise OpenAstroError(f"no fieldZeropoints in {collections}{f' where {where}' if where else ''}: run the "
                             "calibration subset (fieldCalibration) first")
    pooled, notes = pool_colour_terms(butler.get(ref) for ref in refs)
    if colour_index:
        pooled = [p for p in pooled if p.colour_index == colour_index]
    indices = sorted({p.colour_index for p in pooled})
    if len(indices) > 1:
        raise OpenAstroError(f"the field fits used several colour indices ({', '.join(indices)}); "
                             "choose one with --colour-index")
    if not pooled:
        raise OpenAstroError(f"no colour term{f' against {colour_index}' if colour_index else ''} to pool in "
                             f"{len(refs)} field fit(s)")
    table = Table("instrument/band", "colour", "fields", "per field", "pooled", "chi2/dof",
                  title=f"colour terms from {len(refs)} field fit(s)")
    for p in pooled:
        per = ", ".join(f"{f} {v:+.4f} +- {e:.4f}" for f, v, e in p.fields)
        table.add_row(p.key, p.colour_index, str(len(p.fields)), per, f"{p.value:+.4f} +- {p.error:.4f}",
                      f"{p.chi2_red:.2f}")
    console.print(table)
    for note in notes:
        console.print(f"note: {note}")
    text = override_file(pooled)
    if out:
        Path(out).write_text(text)
        console.print(f"wrote {out}: plan other fields with -C fieldCalibration:{out} to take them as known")
    else:
        console.print(text.rstrip())
