"""What every CLI shares: user errors become one red line and exit status 1, never a traceback.

The consoles print text, not Rich markup: messages, paths, collection names and table cells come from users
and would otherwise lose anything in brackets (``[raw/all]``) or crash on a stray closing tag (``[/data]``).
Styles are given explicitly, with ``rich.text.Text``.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.text import Text

from ..errors import OpenAstroError

if TYPE_CHECKING:
    from ..butler import Butler
    from ..ingest.refcats import Registered

# Piped output (CI logs, files) gets a wide console so tables are not squeezed into 80 columns.
_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 140
console = Console(highlight=False, markup=False, soft_wrap=True, width=_WIDTH)
err_console = Console(stderr=True, highlight=False, markup=False, width=_WIDTH)


def user_errors(fn):
    """Make a command print a user error (an OpenAstroError) as one red line and exit 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OpenAstroError as exc:
            err_console.print(Text.assemble(("error:", "bold red"), f" {exc}"), soft_wrap=True)
            sys.exit(1)
    return wrapper


def parse_binds(values: tuple[str, ...]) -> dict:
    """``--bind name=value`` pairs; values that look like numbers become numbers, commas make lists."""
    out = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} is not name=value", param_hint="--bind")
        name, value = item.split("=", 1)

        def conv(v: str):
            for t in (int, float):
                try:
                    return t(v)
                except ValueError:
                    pass
            return v

        out[name.strip()] = [conv(v) for v in value.split(",")] if "," in value else conv(value)
    return out


def register_options(run: str, replace_help: str):
    """``--run`` (default ``run``), ``--chain`` and ``--replace``: where a registering command writes its table."""

    def add(fn):
        fn = click.option("--replace", is_flag=True, help=replace_help)(fn)
        fn = click.option("--chain", default="defaults", show_default=True,
                          help="CHAINED collection made to search --run (new: raw/all then --run); '' for none.")(fn)
        return click.option("--run", default=run, show_default=True, help="RUN collection to register into.")(fn)
    return add


def fetch_options(cache_help: str, refresh_help: str):
    """``--cache``, ``--offline`` and ``--refresh``: how a fetching command uses its local cache of an archive."""

    def add(fn):
        fn = click.option("--refresh", is_flag=True, help=refresh_help)(fn)
        fn = click.option("--offline", is_flag=True, help="Never touch the network: answer from the cache.")(fn)
        return click.option("--cache", type=click.Path(dir_okay=False), help=cache_help)(fn)
    return add


def print_registered(butler: Butler, done: Registered, subject: str, run: str, chain: str, tail: str = "") -> None:
    """``SUBJECT registered|replaced in run RUN (path)TAIL``, then the chain that now searches the run, if made."""
    what = "replaced" if done.replaced else "registered"
    console.print(f"{subject} {what} in run {run} ({butler.path(done.ref)}){tail}")
    if done.chain is not None:
        console.print(f"chain {chain}: {', '.join(done.chain)}  (plan with -i {chain})")
