"""User text reaches the terminal as text: brackets in messages, paths, table cells and reasons are never
read as Rich markup (which dropped a `[raw/all, refcats]` and crashed on a path like `[/data/repo]`)."""

import pytest
from click.testing import CliRunner

from openastro_parsl.cli.butler import main as butler_main
from openastro_parsl.cli.common import user_errors
from openastro_parsl.cli.submit import _on_failure
from openastro_parsl.errors import OpenAstroError

TRICKY = "collections [raw/all, refcats] in [/data/repo] and [bold]not bold[/bold]"


def test_user_errors_print_the_message_as_it_is(capsys):
    @user_errors
    def fails():
        raise OpenAstroError(TRICKY)

    with pytest.raises(SystemExit) as exit_:
        fails()
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.strip() == f"error: {TRICKY}"


def test_a_repository_path_with_brackets_is_one_error_line(tmp_path):
    repo = tmp_path / "[" / "data" / "repo]"
    result = CliRunner().invoke(butler_main, ["query-collections", str(repo)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "MarkupError" not in result.output
    assert f"no repository at {repo}" in result.output


def test_table_cells_and_created_paths_keep_their_brackets(tmp_path):
    repo = tmp_path / "[old]" / "repo"
    result = CliRunner().invoke(butler_main, ["create", str(repo)])
    assert result.exit_code == 0 and f"created repository {repo}" in result.output
    from openastro_parsl.butler import Butler

    Butler(repo).registry.register_run("u/a", doc="copy of [raw/all] made with [bold]care[/]")
    result = CliRunner().invoke(butler_main, ["query-collections", str(repo)])
    assert result.exit_code == 0 and "copy of [raw/all] made with [bold]care[/]" in result.output


def test_a_failed_quantum_line_keeps_brackets(capsys):
    _on_failure({"task": "calibrate", "data_id": {"exposure": 1}, "kind": "science",
                 "message": "ValueError: bad [/data/repo] value", "stderr": "/runs/[x]/q.stderr"})
    err = capsys.readouterr().err
    assert "FAILED calibrate {exposure=1} [science] ValueError: bad [/data/repo] value" in err
    assert "log: /runs/[x]/q.stderr" in err
