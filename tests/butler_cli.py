"""`openastro-butler` run in process for the CLI tests, and the registry state a refused command must leave as it was.

Importable from any test module (tests/ is on pytest's pythonpath).
"""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from openastro_parsl.butler import Butler
from openastro_parsl.cli.butler import main


def run(*args) -> tuple[int, str]:
    """The command's exit status and its output; a traceback (not a user error) fails the test."""
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def registry_state(root: str | Path) -> tuple[list, int]:
    """The collections (name, type, children) and the number of datasets, read afresh from the repository."""
    reg = Butler(root).registry
    return [(c.name, c.type.value, c.children) for c in reg.query_collections()], reg.count_datasets()
