"""The live service's durable inbox: every accepted upload is on disk and in a committed row before its 2xx.

``REPO/live/<name>/frames/<sha256>.fits`` holds the bytes (written to a temporary name, fsynced, renamed, the
directory fsynced) and ``REPO/live/<name>/inbox.sqlite3`` (WAL, ``synchronous=FULL``) one row per distinct file,
unique by SHA-256: the same file uploaded twice is one frame. A frame moves
``accepted -> ingested -> processing -> done``, or ends ``quarantined`` (not a usable frame) or ``failed``
(quanta failed); a service killed at any point re-feeds every frame that is not finished on restart, and
ingest (checksum dedup) and the engine's submit (skip-existing) make that re-feed safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import OpenAstroError

STATES = ("accepted", "ingested", "processing", "done", "quarantined", "failed")
FINISHED = ("done", "quarantined", "failed")
_FIELDS = {"exposure", "message", "quanta", "path"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256 TEXT NOT NULL UNIQUE,
    site TEXT NOT NULL,
    path TEXT NOT NULL,
    metadata TEXT NOT NULL,
    state TEXT NOT NULL,
    received REAL NOT NULL,
    updated REAL NOT NULL,
    exposure TEXT,
    message TEXT,
    quanta TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS frames_state ON frames(state);
CREATE INDEX IF NOT EXISTS frames_received ON frames(received);
"""


@dataclass
class FrameRecord:
    """One uploaded file and how far it got."""

    id: int
    sha256: str
    site: str
    path: str
    metadata: dict
    state: str
    received: float
    exposure: dict | None = None  # the raw's data ID once ingested
    message: str | None = None
    quanta: list[str] = field(default_factory=list)
    updated: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "sha256": self.sha256, "site": self.site, "state": self.state,
                "received": self.received, "updated": self.updated, "exposure": self.exposure,
                "message": self.message, "metadata": self.metadata, "quanta": list(self.quanta)}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Inbox:
    """The frames one live service (``name``) has accepted; safe to share between threads."""

    def __init__(self, repo_root: str | Path, name: str):
        self.dir = Path(repo_root) / "live" / name
        self.frames_dir = self.dir / "frames"
        self.frames_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.dir / "inbox.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before accept() returns
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing -----------------------------------------------------------------------------------
    def accept(self, body: bytes, site: str, metadata: dict,
               check: Callable[[Path], str | None] | None = None) -> tuple[FrameRecord, bool]:
        """Store an upload durably; (its record, True) or, for bytes seen before, (the first record, False).

        ``check(path)`` runs on the stored file before its row exists; a reason it returns makes the row
        ``quarantined`` with that message from the start, so the service's loop never picks the file up.
        """
        sha = hashlib.sha256(body).hexdigest()
        known = self.by_sha256(sha)
        if known is not None:
            return known, False
        dest = self.frames_dir / f"{sha}.fits"
        tmp = self.frames_dir / f".{sha}.{secrets.token_hex(4)}.part"
        with open(tmp, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        _fsync_dir(self.frames_dir)
        reason = check(dest) if check is not None else None
        now = time.time()
        with self._lock:
            try:
                cur = self._db.execute(
                    "INSERT INTO frames (sha256, site, path, metadata, state, received, updated, message) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (sha, site, str(dest), json.dumps(metadata, sort_keys=True),
                     "accepted" if reason is None else "quarantined", now, now, reason))
                frame_id = int(cur.lastrowid or 0)
            except sqlite3.IntegrityError:  # the same bytes accepted by a concurrent request
                frame_id = 0
        if not frame_id:
            first = self.by_sha256(sha)
            assert first is not None
            return first, False
        rec = self.get(frame_id)
        assert rec is not None
        return rec, True

    def mark(self, frame_id: int, state: str, **fields: Any) -> None:
        """Move a frame to ``state``, setting any of ``exposure``, ``message``, ``quanta``, ``path``."""
        if state not in STATES:
            raise OpenAstroError(f"frame {frame_id}: unknown state {state!r} (one of {', '.join(STATES)})")
        unknown = set(fields) - _FIELDS
        if unknown:
            raise OpenAstroError(f"frame {frame_id}: unknown field(s) {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {"state": state, "updated": time.time()}
        for key, value in fields.items():
            values[key] = json.dumps(value) if key in ("exposure", "quanta") else value
        sets = ", ".join(f"{k} = ?" for k in values)
        with self._lock:
            cur = self._db.execute(f"UPDATE frames SET {sets} WHERE id = ?", (*values.values(), frame_id))
        if cur.rowcount != 1:
            raise OpenAstroError(f"no frame {frame_id} in the inbox {self.dir}")

    # -- reading -----------------------------------------------------------------------------------
    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[FrameRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, sha256, site, path, metadata, state, received, exposure, message, quanta, updated "
                f"FROM frames {sql}", tuple(args)).fetchall()
        return [FrameRecord(id=r[0], sha256=r[1], site=r[2], path=r[3], metadata=json.loads(r[4]), state=r[5],
                            received=r[6], exposure=json.loads(r[7]) if r[7] else None, message=r[8],
                            quanta=json.loads(r[9]), updated=r[10]) for r in rows]

    def get(self, frame_id: int) -> FrameRecord | None:
        rows = self._rows("WHERE id = ?", (frame_id,))
        return rows[0] if rows else None

    def by_sha256(self, sha: str) -> FrameRecord | None:
        rows = self._rows("WHERE sha256 = ?", (sha,))
        return rows[0] if rows else None

    def pending(self, states: Iterable[str] = ("accepted", "ingested"), limit: int | None = None) -> list[FrameRecord]:
        """Frames in ``states``, oldest first (the order they were accepted in)."""
        states = tuple(states)
        marks = ", ".join("?" for _ in states)
        tail = f" LIMIT {int(limit)}" if limit else ""
        return self._rows(f"WHERE state IN ({marks}) ORDER BY id{tail}", states)

    def since(self, when: float) -> list[FrameRecord]:
        """Frames received at or after ``when`` (seconds since the epoch), newest first."""
        return self._rows("WHERE received >= ? ORDER BY id DESC", (when,))

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM frames GROUP BY state").fetchall()
        return {state: n for state, n in rows}
