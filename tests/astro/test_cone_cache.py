"""The rule both archive caches follow (``through_cache``) and their SQLite file: cached unless --refresh, never the
network when --offline, the cache when the archive is unreachable, one clear error when neither answers; a failed
write leaves nothing behind. The archive is a refused connection on 127.0.0.1, as in the fetch tests."""

from __future__ import annotations

import pytest
import requests
from archive_server import UNREACHABLE

from openastro_parsl.astro.cone_cache import SqliteCache, is_network_error, through_cache
from openastro_parsl.errors import OpenAstroError


class Missing(OpenAstroError):
    pass


class Store(SqliteCache):
    SCHEMA = "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, body TEXT NOT NULL);"
    ENV, FILE = "OPENASTRO_TEST_CACHE", "t.sqlite"

    def get(self, key):
        with self.connect() as con:
            row = con.execute("SELECT body FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def put(self, key, body):
        with self.connect() as con:
            con.execute("INSERT OR REPLACE INTO answers VALUES (?, ?)", (key, body))
        return body


def _ask(store, key, fetch, offline=False, refresh=False):
    hit = store.get(key)
    return through_cache(None if hit is None else (lambda: hit), fetch, lambda body: store.put(key, body),
                         what=f"cone {key}", cache_path=store.path, offline=offline, refresh=refresh,
                         unavailable=Missing, advice="fetch it once on a machine with a network")


def _unreachable():
    with requests.Session() as session:
        session.trust_env = False  # straight to 127.0.0.1:9 whatever proxy the machine sets
        return session.get(UNREACHABLE, timeout=5).text


def _bad_answer():
    raise ValueError("bad query")


def test_cached_unless_refresh_offline_never_fetches_unreachable_falls_back(tmp_path):
    store = Store(tmp_path / "deep" / "c.sqlite")  # its folder is made
    asked = []

    def archive():
        asked.append(1)
        return f"answer {len(asked)}"

    got = _ask(store, "a", archive)
    assert (got.body, got.source, got.reason, len(asked)) == ("answer 1", "archive", "", 1)
    got = _ask(Store(store.path), "a", archive)  # a new process: the file is the cache
    assert (got.body, got.source, len(asked)) == ("answer 1", "cache", 1)
    got = _ask(store, "a", archive, offline=True, refresh=True)
    assert (got.body, got.source, got.reason, len(asked)) == ("answer 1", "offline-cache", "--offline", 1)
    got = _ask(store, "a", archive, refresh=True)
    assert (got.body, got.source, len(asked)) == ("answer 2", "archive", 2) and store.get("a") == "answer 2"
    got = _ask(store, "a", _unreachable, refresh=True)
    assert got.body == "answer 2" and got.source == "offline-cache"
    assert got.reason.startswith("archive unreachable (ConnectionError: ")


def test_uncached_without_network_is_the_callers_error_naming_query_and_cache(tmp_path):
    store = Store(tmp_path / "c.sqlite")
    with pytest.raises(Missing, match=r"^cone b is not in the cache .*c\.sqlite and the archive unreachable "
                                      r"\(ConnectionError: .*; fetch it once on a machine with a network$"):
        _ask(store, "b", _unreachable)
    with pytest.raises(Missing, match="cone b is not in the cache .* and fetching is off; fetch it once"):
        _ask(store, "b", lambda: pytest.fail("offline must not fetch"), offline=True)
    with pytest.raises(ValueError, match="bad query"):  # not a network error: raised as it is, nothing cached
        _ask(store, "b", _bad_answer)
    assert store.get("b") is None


def test_network_errors_are_told_from_bad_answers():
    with pytest.raises(requests.ConnectionError) as refused:
        _unreachable()
    assert is_network_error(refused.value) and is_network_error(TimeoutError()) and is_network_error(OSError())
    assert not is_network_error(ValueError("bad VOTable")) and not is_network_error(KeyError("ra"))


def test_a_failed_transaction_leaves_nothing_and_the_file_comes_from_the_environment(tmp_path, monkeypatch):
    store = Store(tmp_path / "c.sqlite")
    with pytest.raises(RuntimeError):
        with store.connect() as con:
            con.execute("INSERT INTO answers VALUES ('x', 'half')")
            raise RuntimeError("killed mid-write")
    assert store.get("x") is None
    monkeypatch.setenv("OPENASTRO_TEST_CACHE", str(tmp_path / "env.sqlite"))
    assert Store().path == tmp_path / "env.sqlite" and Store().path.exists()
    monkeypatch.delenv("OPENASTRO_TEST_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Store().path == tmp_path / ".cache" / "openastro_parsl" / "t.sqlite" and Store().path.exists()
