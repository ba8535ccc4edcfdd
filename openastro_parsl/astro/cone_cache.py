"""What the local caches of online archives share: sky cones, the SQLite file, and when to ask the archive.

The Gaia cone cache (``refcat.RefcatCache``) and the archive-answer cache (``ingest.archive_cache``) store
different things but follow one rule, ``through_cache``: a cached answer is used unless ``refresh``; ``offline``
never touches the network; an unreachable archive falls back to the cache; an uncached answer with no network
raises the caller's error naming what was asked and the cache file, never a bare socket error.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generic, Iterator, TypeVar

from .match import angular_separation

__all__ = ["Answer", "Region", "SqliteCache", "is_network_error", "through_cache"]

T = TypeVar("T")
F = TypeVar("F")


@dataclass(frozen=True)
class Region:
    """A cone on the sky, degrees."""

    ra: float
    dec: float
    radius: float

    def contains(self, other: "Region", tol: float = 1e-9) -> bool:
        """True when ``other`` lies entirely inside this cone."""
        return float(angular_separation(self.ra, self.dec, other.ra, other.dec)) + other.radius <= self.radius + tol


class SqliteCache:
    """One SQLite file made on first use with the subclass's ``SCHEMA``; ``connect()`` is one transaction.

    Without a path the file is ``$ENV``, else ``~/.cache/openastro_parsl/FILE`` (the subclass's names).
    """

    SCHEMA = ""
    ENV = ""
    FILE = ""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else self.default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as con:
            con.executescript(self.SCHEMA)
            self._upgrade(con)

    @classmethod
    def default_path(cls) -> Path:
        value = os.environ.get(cls.ENV)
        return Path(value) if value else Path.home() / ".cache" / "openastro_parsl" / cls.FILE

    def _upgrade(self, con: sqlite3.Connection) -> None:
        """Bring a file written by an older version up to ``SCHEMA`` (nothing to do by default)."""

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection whose work is committed on success, rolled back on error, and closed either way."""
        con = sqlite3.connect(self.path, timeout=30.0)
        try:
            con.execute("PRAGMA foreign_keys = ON")
            with con:
                yield con
        finally:
            con.close()


def is_network_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the archive could not be reached (as opposed to a bad query or bad data)."""
    try:
        import requests

        if isinstance(exc, requests.exceptions.RequestException):
            return True
    except ImportError:  # pragma: no cover - requests comes with astroquery
        pass
    from http.client import HTTPException

    return isinstance(exc, (OSError, ConnectionError, TimeoutError, HTTPException))


@dataclass
class Answer(Generic[T]):
    """An archive's answer and where it came from: ``archive``, ``cache`` or ``offline-cache`` (with why)."""

    body: T
    source: str
    reason: str = ""


def through_cache(cached: Callable[[], T] | None, fetch: Callable[[], F], store: Callable[[F], T], *, what: str,
                  cache_path: Path, offline: bool, refresh: bool, unavailable: type[Exception],
                  advice: str) -> Answer[T]:
    """The cached answer (``cached()``, None when there is none) or ``store(fetch())``, by the module's rule.

    ``what`` names the query and ``advice`` what to do in the ``unavailable`` error raised when neither is to be had.
    """
    if cached is not None and (offline or not refresh):
        return Answer(cached(), "offline-cache" if offline else "cache", "--offline" if offline else "")
    if offline:
        raise unavailable(f"{what} is not in the cache {cache_path} and fetching is off; {advice}")
    try:
        fetched = fetch()
    except Exception as exc:
        if not is_network_error(exc):
            raise
        reason = f"archive unreachable ({type(exc).__name__}: {str(exc)[:200]})"
        if cached is not None:
            return Answer(cached(), "offline-cache", reason)
        raise unavailable(f"{what} is not in the cache {cache_path} and the {reason}; {advice}") from None
    return Answer(store(fetched), "archive")
