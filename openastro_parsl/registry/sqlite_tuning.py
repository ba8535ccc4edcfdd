"""How each SQLite registry connection is tuned: page cache, memory map, WAL checkpoint interval, lock wait.

Why these three (measured by ``benchmarks/registry_throughput.py``, docs/scaling.md): a registry of a million
datasets has indexes of random UUIDs (dataset, location, quantum, provenance links), so a batch of 2,000 quanta
dirties ~8 pages a dataset spread over ~500 MB of index. Each commit appends those pages to the WAL and, with
SQLite's default of a checkpoint every 1,000 pages (4 MiB), copies them straight back into the database file:
every page written twice, plus an fsync, per batch. Checkpointing every 256 MiB instead lets pages dirtied by
several batches (the indexes' inner pages, every time) go back once. The memory map lets SQLite read
the database's pages in place instead of copying each one out of the OS cache on every miss of its own cache.

Each value can be set from the environment (MiB; seconds for the lock wait), for a submit host with little memory
or a registry far past 1M.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import RepositoryError

CACHE_ENV = "OPENASTRO_REGISTRY_CACHE_MB"
MMAP_ENV = "OPENASTRO_REGISTRY_MMAP_MB"
CHECKPOINT_ENV = "OPENASTRO_REGISTRY_CHECKPOINT_MB"
BUSY_TIMEOUT_ENV = "OPENASTRO_REGISTRY_BUSY_TIMEOUT"
PAGE = 4096  # SQLite's default page size, which registries are made with


@dataclass(frozen=True)
class SqliteTuning:
    """Per-connection sizes in MiB.

    The page cache is an upper bound, filled as pages are used; the WAL is checkpointed back into the database
    file by the commit that takes it past ``checkpoint_mb``.
    """

    cache_mb: int = 64
    mmap_mb: int = 1024
    checkpoint_mb: int = 256

    def pragmas(self) -> list[str]:
        """The PRAGMA statements that apply these sizes to one connection."""
        return [f"PRAGMA cache_size=-{self.cache_mb * 1024}",  # negative: KiB, whatever the page size
                f"PRAGMA mmap_size={self.mmap_mb * 2**20}",
                f"PRAGMA wal_autocheckpoint={max(1, self.checkpoint_mb * 2**20 // PAGE)}"]


def env_number(env: str, default: float, *, least: float, unit: str, whole: bool = False) -> float:
    """``$env`` as a number >= ``least`` (a whole one if ``whole``), or ``default`` when unset.

    A bad value is one line saying what it should be: these are read where a command starts, before it writes.
    """
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        value = least - 1
    if not value >= least:  # NaN too
        kind = "a whole number" if whole else "a number"
        raise RepositoryError(f"${env}={raw!r} is not {kind} of {unit} >= {least:g}")
    return value


def _mb(env: str, default: int, least: int) -> int:
    return int(env_number(env, default, least=least, unit="MiB", whole=True))


def busy_timeout_s() -> float:
    """How long an SQLite writer waits for another one's write lock before giving up: 60 s unless the env says."""
    return env_number(BUSY_TIMEOUT_ENV, 60.0, least=0.0, unit="seconds")


def sqlite_tuning() -> SqliteTuning:
    """The tuning the environment asks for, else the defaults (64 MiB cache, 1 GiB map, checkpoint at 256 MiB)."""
    d = SqliteTuning()
    return SqliteTuning(cache_mb=_mb(CACHE_ENV, d.cache_mb, 1), mmap_mb=_mb(MMAP_ENV, d.mmap_mb, 0),
                        checkpoint_mb=_mb(CHECKPOINT_ENV, d.checkpoint_mb, 1))
