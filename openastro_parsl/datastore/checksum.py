"""File checksums: ingest's deduplication, `verify`, and the check of every input before a quantum reads it.

Ingest deduplicates by checksum, `verify` proves files are what the registry says, and a quantum proves each input is
still the file that was registered before it reads it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

from ..errors import OpenAstroError

_CHUNK = 1 << 20
log = logging.getLogger(__name__)

VERIFY_ENV = "OPENASTRO_VERIFY_INPUTS"
VERIFY_MODES = ("off", "fast", "full")


class InputChecksumError(OpenAstroError):
    """A quantum's input file is not the one registered (changed, replaced or gone since)."""


def file_checksum(path: str | Path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks so big frames do not sit in memory twice."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_mode() -> str:
    """How workers check inputs: ``off``, ``fast`` (the default) or ``full``.

    Read from the environment, which HTEX workers inherit; export it in a site's ``worker_init`` on a cluster.
    """
    mode = os.environ.get(VERIFY_ENV, "").strip().lower() or "fast"
    if mode not in VERIFY_MODES:
        raise OpenAstroError(f"{VERIFY_ENV}={mode!r}: choose one of {', '.join(VERIFY_MODES)}")
    return mode


# (device, inode, size, mtime_ns, ctime_ns) -> checksum, for files this process has hashed. A worker runs
# many quanta that read the same raws; ctime cannot be set back by a user, so an edit that keeps the size
# and restores the mtime still changes the key.
_hashed: dict[tuple[int, ...], str] = {}


def changed_checksum(path: str | Path, checksum: str, *, size: int | None = None, mtime_ns: int | None = None,
                     mode: str = "fast") -> str | None:
    """None when ``path`` still holds the content of ``checksum``, else the checksum found.

    A file that is gone gives "missing".

    ``fast`` trusts a file whose size and mtime are those recorded with the checksum (``size``/``mtime_ns``)
    or that this process hashed unchanged before; anything else is hashed, so a ``touch`` or a copy that kept
    the content passes. ``full`` hashes every time.
    """
    if mode == "off":
        return None
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if mode == "fast":
        if size is not None and mtime_ns is not None and (st.st_size, st.st_mtime_ns) == (size, mtime_ns):
            return None
        if _hashed.get(key) == checksum:
            return None
    why = ("full mode" if mode == "full" else "no size/mtime recorded" if size is None or mtime_ns is None
           else "size/mtime differ from the recorded ones")
    t0 = time.perf_counter()
    found = file_checksum(path)
    # One record per hash, in the quantum's log: where the time went, and proof the fast path skipped the rest.
    log.info("hashed input %s (%s): %d bytes in %.3f s", path, why, st.st_size, time.perf_counter() - t0)
    # A file written within the last seconds may change again inside the same timestamp tick: not cached.
    if found == checksum and time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > 2_000_000_000:
        if len(_hashed) > 100_000:
            _hashed.clear()
        _hashed[key] = found
    return None if found == checksum else found
