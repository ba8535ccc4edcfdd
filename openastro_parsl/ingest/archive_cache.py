"""Answers of online archives (SkyBoT cones, MPC orbits, SIMBAD / NED cones) kept in one local SQLite file, so a
fetch command run once on a login node can be re-run offline, and a cluster never needs the network.

The same rules as the Gaia cone cache (``astro/refcat.py``): a cached answer is used unless ``refresh``;
``offline`` never touches the network; an unreachable archive falls back to the cache; an uncached answer with
no network raises ``ArchiveUnavailable`` naming what was asked and the cache, never a bare socket error. A cone
asked again inside a cached one (same service, same epoch) is answered from it. Answers are stored as JSON.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..astro.refcat import RefcatError, Region, is_network_error

__all__ = ["Answer", "ArchiveCache", "ArchiveUnavailable", "cached_answer", "default_archive_cache"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    answer_id INTEGER PRIMARY KEY AUTOINCREMENT,
    service TEXT NOT NULL, key TEXT NOT NULL,
    ra REAL, dec REAL, radius REAL, epoch_jd REAL,
    fetched_at REAL NOT NULL, body TEXT NOT NULL,
    UNIQUE (service, key)
);
"""
EPOCH_TOLERANCE_DAYS = 1e-4  # cones are reused at the same epoch only (~9 s)


class ArchiveUnavailable(RefcatError):
    """The answer is not cached and the archive cannot be reached (or fetching is off)."""


def default_archive_cache() -> Path:
    """``$OPENASTRO_ARCHIVE_CACHE``, else ``~/.cache/openastro_parsl/archive.sqlite`` (beside the refcat cache)."""
    env = os.environ.get("OPENASTRO_ARCHIVE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "openastro_parsl" / "archive.sqlite"


class ArchiveCache:
    """One row per answer: the service, its key (the query, normalised), the cone it covers if any, the JSON."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_archive_cache()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30.0)

    def get(self, service: str, key: str) -> Any | None:
        with self._connect() as con:
            row = con.execute("SELECT body FROM answers WHERE service = ? AND key = ?", (service, key)).fetchone()
        return None if row is None else json.loads(row[0])

    def find_cone(self, service: str, region: Region, epoch_jd: float | None = None) -> Any | None:
        """The answer of the smallest cached cone of ``service`` containing ``region`` (at ``epoch_jd``)."""
        with self._connect() as con:
            rows = con.execute("SELECT ra, dec, radius, epoch_jd, body FROM answers WHERE service = ? AND radius IS "
                               "NOT NULL ORDER BY radius", (service,)).fetchall()
        for ra, dec, radius, epoch, body in rows:
            same_epoch = (epoch is None and epoch_jd is None) or (
                epoch is not None and epoch_jd is not None and abs(epoch - epoch_jd) <= EPOCH_TOLERANCE_DAYS)
            if same_epoch and Region(ra, dec, radius).contains(region):
                return json.loads(body)
        return None

    def put(self, service: str, key: str, body: Any, region: Region | None = None,
            epoch_jd: float | None = None) -> None:
        """Store (or replace) one answer in one transaction."""
        text = json.dumps(body)
        with self._connect() as con:
            con.execute("INSERT OR REPLACE INTO answers (service, key, ra, dec, radius, epoch_jd, fetched_at, body) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (service, key, None if region is None else region.ra, None if region is None else region.dec,
                         None if region is None else region.radius, epoch_jd, time.time(), text))


@dataclass
class Answer:
    """An archive's answer and where it came from: ``archive``, ``cache`` or ``offline-cache`` (with why)."""

    body: Any
    source: str
    reason: str = ""


def cached_answer(cache: ArchiveCache, service: str, key: str, fetch: Callable[[], Any], *, what: str,
                  offline: bool = False, refresh: bool = False, region: Region | None = None,
                  epoch_jd: float | None = None) -> Answer:
    """``fetch()``'s answer through the cache (see the module's rules); ``what`` names the query in messages."""
    hit = cache.get(service, key)
    if hit is None and region is not None:
        hit = cache.find_cone(service, region, epoch_jd)
    if hit is not None and (offline or not refresh):
        return Answer(hit, "offline-cache" if offline else "cache", "--offline" if offline else "")
    if offline:
        raise ArchiveUnavailable(f"{what} is not in the cache {cache.path} and fetching is off; fetch it once on a "
                                 "machine with a network")
    try:
        body = fetch()
    except Exception as exc:
        if is_network_error(exc):
            reason = f"archive unreachable ({type(exc).__name__}: {str(exc)[:200]})"
            if hit is not None:
                return Answer(hit, "offline-cache", reason)
            raise ArchiveUnavailable(f"{what} is not in the cache {cache.path} and the {reason}; fetch it once on "
                                     "a machine with a network") from None
        raise
    cache.put(service, key, body, region, epoch_jd)
    return Answer(body, "archive")
