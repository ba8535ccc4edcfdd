"""When and where each quantum of a run ran, and what it cost: the data behind the report's timeline.

One record per quantum that reached a worker (or was lost with one), read from the status store; one row
per worker slot (host, Parsl block, worker rank). A store written before workers reported their identity
has no rank: its quanta are packed per host into lanes of non-overlapping bars, and the row says so.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from .status import StatusStore

# status column -> record key
_COLUMNS = {"id": "quantum_id", "task": "task", "state": "state", "attempts": "attempts", "executor": "executor",
            "started": "started", "ended": "ended", "wall": "wall_s", "cpu": "cpu_s", "maxrss_mb": "peak_rss_mb",
            "rss_scope": "rss_scope", "host": "host", "pid": "pid", "block_id": "block_id",
            "worker_rank": "worker_rank", "pool_id": "pool_id", "slurm_job_id": "slurm_job_id",
            "error_kind": "error_kind"}
LOST = "worker unknown"


def quantum_records(status: StatusStore) -> list[dict[str, Any]]:
    """Every quantum with a start and an end, in start order, each with the ``row`` of the timeline it sits in."""
    records = []
    for row in status.rows("WHERE started IS NOT NULL AND ended IS NOT NULL ORDER BY started, id"):
        keys = set(row.keys())
        rec = {out: row[col] if col in keys else None for col, out in _COLUMNS.items()}
        rec["data_id"] = json.loads(row["data_id"])
        for k in ("started", "ended", "wall_s", "cpu_s", "peak_rss_mb"):
            value = rec[k]
            if value is not None:
                rec[k] = round(float(value), 3)
        records.append(rec)
    _assign_rows(records)
    return records


def _worker_key(rec: dict[str, Any]) -> tuple | None:
    if rec["host"] is None:
        return None
    if rec["worker_rank"] is None:
        return (rec["host"], rec["block_id"], None)
    return (rec["host"], rec["block_id"] or "", int(rec["worker_rank"]))


def _label(host: str, block: str | None, rank: int | None) -> str:
    parts = [host]
    if block not in (None, ""):
        parts.append(f"block {block}")
    parts.append(f"worker {rank}" if rank is not None else "")
    return " · ".join(p for p in parts if p)


def _assign_rows(records: list[dict[str, Any]]) -> None:
    """Set each record's ``row``: its worker slot, or a lane of its host when no rank was recorded."""
    lanes: dict[tuple, list[float]] = {}  # (host, block) -> end time of each lane's last bar
    for rec in records:
        key = _worker_key(rec)
        if key is None:
            rec["row"] = LOST
        elif key[2] is not None:
            rec["row"] = _label(*key)
        else:
            ends = lanes.setdefault(key[:2], [])
            lane = next((i for i, end in enumerate(ends) if end <= rec["started"]), len(ends))
            if lane == len(ends):
                ends.append(rec["ended"])
            ends[lane] = rec["ended"]
            rec["row"] = f"{_label(key[0], key[1], None)} · lane {lane} (no worker id recorded)"


def worker_rows(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The timeline's rows in display order (host, block, rank; lost last): quanta run and busy seconds each."""
    rows: dict[str, dict[str, Any]] = {}
    for rec in records:
        r = rows.setdefault(rec["row"], {"row": rec["row"], "host": rec["host"], "block_id": rec["block_id"],
                                         "worker_rank": rec["worker_rank"], "quanta": 0, "busy_s": 0.0})
        r["quanta"] += 1
        r["busy_s"] = round(r["busy_s"] + (rec["ended"] - rec["started"]), 3)

    def order(r: dict[str, Any]) -> tuple:
        lost = r["row"] == LOST
        return (lost, str(r["host"]), _numeric(r["block_id"]), r["worker_rank"] if r["worker_rank"] is not None else -1,
                r["row"])

    return sorted(rows.values(), key=order)


def _numeric(value: Any) -> tuple:
    """Sort key putting block "10" after block "9"."""
    text = "" if value is None else str(value)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def session_starts(status: StatusStore) -> list[float]:
    """When each submit session (the first one, then every resume) started."""
    return [t for t, kind, _ in status.events() if kind == "start"]


def timeline_json(status: StatusStore) -> dict[str, Any]:
    """``quanta``, ``workers`` and ``sessions`` of ``openastro-report --json``."""
    records = quantum_records(status)
    return {"quanta": records, "workers": worker_rows(records), "sessions": session_starts(status)}
