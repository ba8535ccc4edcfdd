"""Answers of online archives (SkyBoT cones, MPC orbits, SIMBAD / NED cones) kept in one local SQLite file, so a
fetch command run once on a login node can be re-run offline, and a cluster never needs the network.

The Gaia cone cache's rules (``astro/cone_cache.py``, ``through_cache``, which both use): a cached answer
is used unless ``refresh``; ``offline`` never touches the network; an unreachable archive falls back to the
cache; an uncached answer with no network raises ``ArchiveUnavailable`` naming what was asked and the cache,
never a bare socket error. A cone asked again inside a cached one (same service, same epoch) is answered from
it. Answers are stored as JSON.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from ..astro.cone_cache import Answer, Region, SqliteCache, through_cache
from ..astro.refcat import RefcatError

__all__ = ["Answer", "ArchiveCache", "ArchiveUnavailable", "cached_answer"]

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


class ArchiveCache(SqliteCache):
    """One row per answer: the service, its key (the query, normalised), the cone it covers if any, the JSON."""

    SCHEMA = _SCHEMA
    ENV, FILE = "OPENASTRO_ARCHIVE_CACHE", "archive.sqlite"  # beside the refcat cache

    def get(self, service: str, key: str) -> Any | None:
        with self.connect() as con:
            row = con.execute("SELECT body FROM answers WHERE service = ? AND key = ?", (service, key)).fetchone()
        return None if row is None else json.loads(row[0])

    def find_cone(self, service: str, region: Region, epoch_jd: float | None = None) -> Any | None:
        """The answer of the smallest cached cone of ``service`` containing ``region`` (at ``epoch_jd``)."""
        with self.connect() as con:
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
        with self.connect() as con:
            con.execute("INSERT OR REPLACE INTO answers (service, key, ra, dec, radius, epoch_jd, fetched_at, body) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (service, key, None if region is None else region.ra, None if region is None else region.dec,
                         None if region is None else region.radius, epoch_jd, time.time(), text))


def cached_answer(cache: ArchiveCache, service: str, key: str, fetch: Callable[[], Any], *, what: str,
                  offline: bool = False, refresh: bool = False, region: Region | None = None,
                  epoch_jd: float | None = None) -> Answer:
    """``fetch()``'s answer through the cache (see the module's rules); ``what`` names the query in messages."""
    hit = cache.get(service, key)
    if hit is None and region is not None:
        hit = cache.find_cone(service, region, epoch_jd)

    def store(body: Any) -> Any:
        cache.put(service, key, body, region, epoch_jd)
        return body

    return through_cache(None if hit is None else lambda: hit, fetch, store, what=what, cache_path=cache.path,
                         offline=offline, refresh=refresh, unavailable=ArchiveUnavailable,
                         advice="fetch it once on a machine with a network")
