"""File checksums: how ingest deduplicates and `verify` proves files are what the registry says."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def file_checksum(path: str | Path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks so big frames do not sit in memory twice."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
