"""The per-run status store: one SQLite file beside the run's logs, written at every state change.

It is what makes a run inspectable from another shell while it goes (`openastro-status`), reportable after
it ends (`openastro-report`), and resumable after the submit process was killed (`--resume`).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

STATES = ("pending", "running", "succeeded", "no_work", "failed", "upstream_failed", "skipped")
# Finished for good: never rerun by --resume. ``no_work`` is a quantum whose task found nothing to do
# (NoWorkFound) or whose required inputs were never produced for that reason.
DONE = ("succeeded", "skipped", "no_work")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS quantum (
    id TEXT PRIMARY KEY, task TEXT NOT NULL, data_id TEXT NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, executor TEXT, error_kind TEXT, error_type TEXT, message TEXT,
    stdout TEXT, stderr TEXT, jsonl TEXT, started REAL, ended REAL, wall REAL, cpu REAL, maxrss_mb REAL,
    host TEXT, slurm_job_id TEXT, block_id TEXT, pid INTEGER, worker_rank INTEGER, pool_id TEXT, rss_scope TEXT
);
CREATE INDEX IF NOT EXISTS quantum_by_state ON quantum(task, state);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS event (time REAL NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL);
"""
_FIELDS = ("state", "attempts", "executor", "error_kind", "error_type", "message", "started", "ended", "wall",
           "cpu", "maxrss_mb", "host", "slurm_job_id", "block_id", "pid", "worker_rank", "pool_id", "rss_scope")
# Columns added since the first status stores: an older store gains them (NULL) when opened.
_ADDED = {"block_id": "TEXT", "pid": "INTEGER", "worker_rank": "INTEGER", "pool_id": "TEXT", "rss_scope": "TEXT"}
# What the worker reports about where and at what cost a quantum ran (see runner.run_quantum and usage.py).
_WORKER = ("ended", "wall", "cpu", "maxrss_mb", "rss_scope", "host", "pid", "block_id", "worker_rank", "pool_id",
           "slurm_job_id")


def worker_fields(manifest: dict[str, Any]) -> dict[str, Any]:
    """The status fields of a finished quantum taken from its manifest: where, when and at what cost it ran.

    ``started`` becomes the worker's start (until then it is when the quantum was handed to Parsl) only when the
    worker reported one: a quantum lost with its worker keeps its hand-off time. ``ended`` is now when no worker
    said otherwise.
    """
    fields = {k: manifest.get(k) for k in _WORKER}
    if fields["ended"] is None:
        fields["ended"] = time.time()
    if manifest.get("started") is not None:
        fields["started"] = manifest["started"]
    return fields


class StatusStore:
    """A run's ``status.sqlite3``: one row per quantum, the run's metadata and a log of events."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_SCHEMA)
        self._migrate()
        self.conn.row_factory = sqlite3.Row

    def _migrate(self) -> None:
        """Add the columns an older store lacks (left NULL); a read-only store is read as it is."""
        have = {r[1] for r in self.conn.execute("PRAGMA table_info(quantum)")}
        try:
            for name, kind in _ADDED.items():
                if name not in have:
                    self.conn.execute(f"ALTER TABLE quantum ADD COLUMN {name} {kind}")
        except sqlite3.OperationalError as exc:
            if "readonly" not in str(exc):
                raise

    @classmethod
    def open_existing(cls, path: str | Path) -> "StatusStore":
        path = Path(path)
        if not path.exists():
            from ..errors import OpenAstroError

            raise OpenAstroError(f"no status store at {path}: is this a run directory of openastro-submit?")
        return cls(path)

    def close(self) -> None:
        self.conn.close()

    def add_quanta(self, rows: Iterable[tuple[str, str, dict, dict[str, str]]]) -> None:
        """(id, task, data_id, log paths) for every quantum of the graph, all pending."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT OR IGNORE INTO quantum (id, task, data_id, state, stdout, stderr, jsonl) VALUES (?,?,?,?,?,?,?)",
                ((qid, task, json.dumps(did), "pending", logs["stdout"], logs["stderr"], logs["jsonl"])
                 for qid, task, did, logs in rows))

    def update(self, qid: str, **fields: Any) -> None:
        bad = set(fields) - set(_FIELDS)
        if bad:
            raise KeyError(f"unknown status fields {bad}")
        cols = ", ".join(f"{k} = ?" for k in fields)
        self.conn.execute(f"UPDATE quantum SET {cols} WHERE id = ?", (*fields.values(), qid))

    def update_rows(self, rows: list[tuple[str, dict[str, Any]]]) -> None:
        """Several quanta's changes in one transaction (rows with the same fields share one statement)."""
        groups: dict[tuple[str, ...], list[tuple]] = {}
        for qid, fields in rows:
            groups.setdefault(tuple(fields), []).append((*fields.values(), qid))
        with self.conn:
            self.conn.execute("BEGIN")
            for keys, params in groups.items():
                bad = set(keys) - set(_FIELDS)
                if bad:
                    raise KeyError(f"unknown status fields {bad}")
                cols = ", ".join(f"{k} = ?" for k in keys)
                self.conn.executemany(f"UPDATE quantum SET {cols} WHERE id = ?", params)

    def update_many(self, qids: list[str], **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany(f"UPDATE quantum SET {cols} WHERE id = ?", [(*fields.values(), q) for q in qids])

    def states(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT id, state FROM quantum").fetchall())

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for task, state, n in self.conn.execute("SELECT task, state, COUNT(*) FROM quantum GROUP BY task, state"):
            out.setdefault(task, {s: 0 for s in STATES})[state] = n
        return out

    def rows(self, where: str = "", params: tuple = ()) -> Iterator[sqlite3.Row]:
        return iter(self.conn.execute(f"SELECT * FROM quantum {where}", params).fetchall())

    def get(self, qid: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM quantum WHERE id = ?", (qid,)).fetchone()

    def row(self, qid: str) -> sqlite3.Row:
        """The row of a quantum the store holds; KeyError for one it does not."""
        row = self.get(qid)
        if row is None:
            raise KeyError(f"quantum {qid} is not in {self.path}")
        return row

    def set_meta(self, key: str, value: Any) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def event(self, event: str, **detail: Any) -> None:
        self.conn.execute("INSERT INTO event (time, kind, detail) VALUES (?,?,?)",
                          (time.time(), event, json.dumps(detail, default=str)))

    def events(self) -> list[tuple[float, str, dict]]:
        return [(t, k, json.loads(d)) for t, k, d in self.conn.execute("SELECT time, kind, detail FROM event ORDER BY time")]
