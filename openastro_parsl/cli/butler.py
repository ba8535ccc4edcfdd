"""`openastro-butler`: create a repository, ingest raws, look at what it holds, verify its files."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from ..butler import Butler
from ..errors import OpenAstroError
from ..ingest.fields import apply_assignments, plan_assignments
from ..ingest.ingest import ingest_raws
from ..ingest.overrides import parse_header_fixes
from ..ingest.suggest import relevant_cards, suggestion_yaml
from ..ingest.translator import load_translators, with_default_field
from .common import console, err_console, parse_binds, user_errors

TRANSFERS = ["copy", "symlink", "direct", "move"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Manage an openastro-parsl data repository (SQLite registry + file datastore)."""


@main.command()
@click.argument("repo", type=click.Path())
@click.option("--universe", type=click.Path(exists=True, dir_okay=False),
              help="Dimension universe YAML (default: the packaged one).")
@click.option("--registry", "--db", "db", help="Registry database: an SQLite file (a path relative to REPO; default "
              "registry.sqlite3) or a URL, e.g. postgresql://user@host:5432/NAME (NAME is created if missing).")
@user_errors
def create(repo: str, universe: str | None, db: str | None) -> None:
    """Create an empty repository at REPO."""
    butler = Butler.create(repo, universe=universe, db=db)
    console.print(f"created repository {butler.root} (registry {butler.registry.display_url}, "
                  f"universe {butler.universe.name} v{butler.universe.version})")


@main.command()
@click.argument("repo", type=click.Path())
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--run", default="raw/all", show_default=True, help="RUN collection to ingest into.")
@click.option("--transfer", type=click.Choice(TRANSFERS), default="copy", show_default=True)
@click.option("--field", "field_name", help="Field (already defined, with ra/dec) for frames whose header names no "
              "object; frames that name one keep theirs.")
@click.option("--set", "header_set", multiple=True, metavar="KEY=VALUE",
              help="Header card to add or replace before the frame is read (repeatable), e.g. --set FILTER=V: "
              "written into the repository's copy (with a HISTORY card), never into your file.")
@user_errors
def ingest(repo: str, files: tuple[str, ...], run: str, transfer: str, field_name: str | None,
           header_set: tuple[str, ...]) -> None:
    """Ingest raw FITS FILES (or directories of them) into REPO.

    A frame no header translator recognises is quarantined; the cards it carries and an instruments.yaml
    entry that would read it are printed (and saved beside it in REPO/quarantine/ as NAME.instruments.yaml).
    """
    butler = Butler(repo)
    translators = load_translators(butler.root)
    if field_name is not None:
        translators = with_default_field(butler.registry, translators, field_name)
    fixes = parse_header_fixes(header_set)
    report = ingest_raws(butler, files, run=run, transfer=transfer, translators=translators, header_fixes=fixes)
    for path, reason in report.quarantined:
        console.print(Text.assemble(("quarantined", "yellow"), f" {path}: {reason}"))
    for path, header in report.unmatched:
        _explain_unmatched(path, header)
    console.print(report.summary())


def _explain_unmatched(path: Path, header) -> None:
    console.print(f"  {path.name}: the cards it carries:")
    for line in relevant_cards(header):
        console.print(f"    {line}")
    try:
        text = suggestion_yaml(header)
    except OpenAstroError as exc:
        console.print(f"  no translator can be suggested: {exc}")
        return
    saved = path.with_name(path.name + ".instruments.yaml")
    saved.write_text(text)
    console.print(f"  a translator that reads it (REPO/instruments.yaml; saved as {saved}):")
    console.print(text.rstrip())


@main.command("assign-fields")
@click.argument("repo", type=click.Path())
@click.option("--collections", required=True, help="Comma-separated collections holding the wcsSolution datasets.")
@click.option("--radius", default=1.0, show_default=True, type=float, help="Largest distance (deg) from the "
              "frame's solved centre to a field's centre.")
@click.option("--dry-run", is_flag=True, help="Show what would move, change nothing.")
@user_errors
def assign_fields(repo: str, collections: str, radius: float, dry_run: bool) -> None:
    """Move plate-solved exposures of field 'unassigned' to the nearest defined field within --radius.

    The exposure records and every dataset of those exposures change in one transaction; plan again afterwards
    and the frames join their field's co-adds and light curves.
    """
    butler = Butler(repo)
    report = plan_assignments(butler, [c.strip() for c in collections.split(",") if c.strip()], radius)
    for a in report.moved:
        console.print(f"{a.instrument} {a.exposure}: centre {a.centre[0]:.4f} {a.centre[1]:+.4f} -> field "
                      f"{a.field} ({a.separation_deg:.3f} deg)")
    for a in report.too_far:
        console.print(f"{a.instrument} {a.exposure}: centre {a.centre[0]:.4f} {a.centre[1]:+.4f}, nearest field "
                      f"{a.separation_deg:.2f} deg away: left unassigned")
    for inst, exp, why in report.unsolved:
        console.print(f"{inst} {exp}: left unassigned ({why})")
    if not dry_run:
        apply_assignments(butler.registry, report.moved)
    console.print(("would move: " if dry_run else "") + report.summary())


@main.command("query-collections")
@click.argument("repo", type=click.Path())
@click.argument("pattern", default="*")
@user_errors
def query_collections(repo: str, pattern: str) -> None:
    """List collections matching PATTERN (a glob)."""
    table = Table("name", "type", "children / doc")
    for info in Butler(repo).query_collections(pattern):
        table.add_row(info.name, info.type.value, ", ".join(info.children) if info.children else info.doc)
    console.print(table)


@main.command("query-dataset-types")
@click.argument("repo", type=click.Path())
@click.argument("pattern", default="*")
@user_errors
def query_dataset_types(repo: str, pattern: str) -> None:
    """List dataset types matching PATTERN."""
    table = Table("name", "dimensions", "storage class")
    for dt in Butler(repo).registry.query_dataset_types(pattern):
        table.add_row(dt.name, ", ".join(dt.dimensions), dt.storage_class)
    console.print(table)


def _where_options(fn):
    fn = click.option("--where", "-d", default="", help="Constraint, e.g. \"instrument='lco1m' AND band IN ('g','r')\".")(fn)
    fn = click.option("--bind", multiple=True, help="Bind value for the where expression: name=value (repeatable).")(fn)
    return fn


@main.command("query-datasets")
@click.argument("repo", type=click.Path())
@click.argument("dataset_type")
@click.option("--collections", required=True, help="Comma-separated collections to search, in order.")
@click.option("--all", "find_all", is_flag=True, help="Every matching dataset, not only the first per data ID.")
@click.option("--show-path", is_flag=True, help="Show each dataset's file.")
@_where_options
@user_errors
def query_datasets(repo, dataset_type, collections, find_all, show_path, where, bind) -> None:
    """Datasets of DATASET_TYPE (a name, a glob like 'calexp*' or '*') in the collections."""
    butler = Butler(repo)
    refs = butler.query_datasets(dataset_type, collections, where, parse_binds(bind), find_first=not find_all)
    by_type: dict[str, list] = {}
    for ref in refs:
        by_type.setdefault(ref.name, []).append(ref)
    if not refs:
        console.print("no datasets found")
    for name, group in by_type.items():
        dims = list(butler.universe.expanded(group[0].dataset_type.dimensions))
        table = Table("type", "run", *dims, "id", *(["path"] if show_path else []), title=f"{name} ({len(group)})")
        for ref in group:
            table.add_row(name, ref.run, *[str(ref.data_id.get(d, "")) for d in dims], ref.id[:8],
                          *([str(butler.path(ref))] if show_path else []))
        console.print(table)


@main.command("query-data-ids")
@click.argument("repo", type=click.Path())
@click.argument("dimensions", nargs=-1, required=True)
@click.option("--datasets", help="Only data IDs with a dataset of this type (needs --collections).")
@click.option("--collections", help="Collections for --datasets.")
@_where_options
@user_errors
def query_data_ids(repo, dimensions, datasets, collections, where, bind) -> None:
    """Distinct data IDs over DIMENSIONS."""
    rows = Butler(repo).query_data_ids(list(dimensions), where, parse_binds(bind), datasets=datasets,
                                       collections=collections)
    if not rows:
        console.print("no data IDs found")
        return
    table = Table(*rows[0].keys(), title=f"{len(rows)} data IDs")
    for r in rows:
        table.add_row(*[str(v) for v in r.values()])
    console.print(table)


@main.command("query-dimension-records")
@click.argument("repo", type=click.Path())
@click.argument("dimension")
@_where_options
@user_errors
def query_dimension_records(repo, dimension, where, bind) -> None:
    """Records of one DIMENSION with their metadata."""
    rows = Butler(repo).registry.dimension_records(dimension, where, parse_binds(bind))
    if not rows:
        console.print("no records")
        return
    table = Table(*rows[0].keys(), title=f"{dimension}: {len(rows)} records")
    for r in rows:
        table.add_row(*["" if v is None else str(v) for v in r.values()])
    console.print(table)


@main.command("collection-chain")
@click.argument("repo", type=click.Path())
@click.argument("name")
@click.argument("children", nargs=-1, required=True)
@user_errors
def collection_chain(repo, name, children) -> None:
    """Define CHAINED collection NAME searching CHILDREN in order."""
    Butler(repo).set_chain(name, list(children))
    console.print(f"{name} -> {', '.join(children)}")


@main.command()
@click.argument("repo", type=click.Path())
@user_errors
def verify(repo: str) -> None:
    """Check every registered dataset's file exists and matches its checksum."""
    checked, problems = Butler(repo).verify()
    for p in problems:
        console.print(Text(str(p), style="red"))
    console.print(f"verified {checked} datasets: {len(problems)} problem(s)")
    if problems:
        raise SystemExit(1)


@main.command("add-token")
@click.argument("repo", type=click.Path())
@click.argument("site")
@user_errors
def add_token(repo: str, site: str) -> None:
    """Make SITE's upload token for the live service (printed once; a new one replaces the old)."""
    from ..live.tokens import TokenStore

    token, replaced = TokenStore(Butler(repo).root).add(site)
    console.print(token)
    err_console.print(f"site {site}: {'new token (the old one no longer works)' if replaced else 'token made'}; "
                      f"it is shown only now. Upload with: Authorization: Bearer TOKEN, X-OpenAstro-Site: {site}")


# Command groups that live in their own modules (one job each); importing them adds their commands to `main`.
from . import calib_cmds, campaign_cmds, lightcurve_cmds, orbit_cmds  # noqa: E402,F401
