"""Site tokens: stored hashed, shown once, checked per site in constant time; and `openastro-serve` options."""

import hashlib
import json

import pytest
from click.testing import CliRunner

from openastro_parsl.butler import Butler
from openastro_parsl.cli.butler import main as butler_cli
from openastro_parsl.cli.serve import parse_gather
from openastro_parsl.errors import OpenAstroError
from openastro_parsl.live.tokens import TokenStore


def test_add_token_prints_it_once_and_stores_only_its_hash(tmp_path):
    repo = Butler.create(tmp_path / "repo").root
    out = CliRunner().invoke(butler_cli, ["add-token", str(repo), "lco-ogg"])
    assert out.exit_code == 0, out.output
    token = out.stdout.strip()
    assert len(token) >= 40
    stored = (repo / "live" / "tokens.json").read_text()
    assert token not in stored
    assert json.loads(stored)["lco-ogg"]["sha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert (repo / "live" / "tokens.json").stat().st_mode & 0o077 == 0  # readable by its owner only
    assert TokenStore(repo).check("lco-ogg", token).ok
    bad = CliRunner().invoke(butler_cli, ["add-token", str(repo), "bad site/1"])
    assert bad.exit_code == 1 and "site name 'bad site/1'" in bad.output


def test_verdicts_and_rotation(tmp_path):
    store = TokenStore(tmp_path)
    a, _ = store.add("a")
    b, _ = store.add("b")
    assert store.check("a", a).ok and store.check("b", b).ok
    assert (store.check("a", b).status, store.check("a", b).reason) == (403, "token of site 'b' sent for site 'a'")
    assert store.check("a", "x" * 43).status == 401 and store.check("a", None).status == 401
    assert store.check(None, a).status == 401 and store.check("c", a).status == 403
    new, replaced = store.add("a")
    assert replaced and store.check("a", new).ok
    assert store.check("a", a).status == 401  # the old token stopped working
    assert store.sites() == ["a", "b"]


def test_unreadable_token_file_is_one_clear_error(tmp_path):
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "tokens.json").write_text("{oops")
    with pytest.raises(OpenAstroError, match="tokens.json: unreadable token file"):
        TokenStore(tmp_path).check("a", "t")


def test_gather_option():
    assert parse_gather(("templateCoadd:after=5,every_s=300", "coadd:every_s=none,after=2")) == {
        "templateCoadd": {"after": 5, "every_s": 300.0}, "coadd": {"every_s": None, "after": 2}}
    for bad in ("coadd", "coadd:", "coadd:often=3", "coadd:after=soon", ":after=3"):
        with pytest.raises(OpenAstroError, match="--gather"):
            parse_gather((bad,))


def test_serve_refuses_bad_options_in_one_line(tmp_path):
    from openastro_parsl.cli.serve import main as serve

    repo = Butler.create(tmp_path / "repo").root
    out = CliRunner().invoke(serve, [str(repo), "--name", "a b"])
    assert out.exit_code == 1 and "--name 'a b': use 1-64 letters" in out.output
    out = CliRunner().invoke(serve, [str(repo), "--pipeline", str(tmp_path / "nope.yaml")])
    assert out.exit_code == 1 and "nope.yaml: cannot read pipeline" in out.output
