"""The datastore: files under the repository root, laid out by run / dataset type / data ID.

Workers write here without touching the registry: every write lands atomically (temp file + rename in the
same directory), so a killed worker leaves either nothing or a whole file, never a torn one, and returns
the location (relative path, checksum, size, mtime_ns, formatter) for the submit process to register. The
size and mtime are the file's stat taken just before its checksum: a worker later trusts a file that still
shows them without hashing it again (OPENASTRO_VERIFY_INPUTS=fast).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from functools import lru_cache
from operator import itemgetter
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import DatastorePathError, FormatterError, OpenAstroError
from .checksum import file_checksum
from .formatters import Formatter, formatter_for, formatter_named

_PLAIN = re.compile(r"[A-Za-z0-9._+=-]+")
_PLAIN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._+=-")
NAME_MAX = 255  # bytes in one file or folder name on common file systems
TRANSFER_MODES = ("copy", "symlink", "direct", "move")
# Rename is atomic against a killed process either way; fsync (OPENASTRO_FSYNC=1) adds safety against a
# power cut at a few ms per file, which at thousands of small outputs per minute is most of the cost.
FSYNC = os.environ.get("OPENASTRO_FSYNC", "0") == "1"


@lru_cache(maxsize=65536, typed=True)
def _safe(part: Any) -> str:
    """One path component for a run component or data-ID value, reversibly.

    Ordinary text (letters, digits, ``._+=-``) stays as it is and anything else is percent-encoded (UTF-8), so that two
    different values never share a folder or file (folding ``:`` or ``é`` to ``_`` made different datasets overwrite
    each other).
    """
    text = str(part)
    if text in (".", ".."):
        return text.replace(".", "%2E")
    if not text:
        return "%"  # no encoded value is a bare '%'
    if _PLAIN.fullmatch(text):
        return text
    return "".join(ch if ch in _PLAIN_CHARS else "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
                   for ch in text)


def dataset_relpath(run: str, dataset_type: str, key_dims: Sequence[str], data_id: Mapping[str, Any],
                    extension: str) -> str:
    """``run/datasetType/<all but the last key value>/datasetType_<values>.ext``: few files per directory.

    Injective for a dataset type's fixed key dimensions: the folders carry every value but the last, which the
    file name then determines. A name too long for the file system is refused here, not as an OSError later.
    """
    values = [_safe(data_id[d]) for d in key_dims]
    parts = [run_relpath(run), dataset_type] + values[:-1] + ["_".join([dataset_type] + values) + extension]
    for part in parts[1:]:
        if len(part.encode()) > NAME_MAX:
            raise DatastorePathError(
                f"cannot store {dataset_type} {dict(data_id)}: the file or folder name {part[:40]!r}... is "
                f"{len(part.encode())} bytes, more than the file system's {NAME_MAX} (shorten the data ID values)")
    return "/".join(parts)


def dataset_relpath_maker(run: str, dataset_type: str, key_dims: Sequence[str],
                          extension: str) -> Callable[[Mapping[str, Any]], str]:
    """``dataset_relpath`` of one run, dataset type and extension, for the many data IDs a planner gives it."""
    head = f"{run_relpath(run)}/{dataset_type}/"
    short = NAME_MAX // 4  # a name of at most this many characters fits in NAME_MAX bytes of UTF-8

    def make(data_id: Mapping[str, Any]) -> str:
        values = [_safe(data_id[d]) for d in key_dims]
        name = "_".join([dataset_type, *values]) + extension
        if len(name) > short:  # every part is in the name: measure them in bytes (and refuse) the slow way
            return dataset_relpath(run, dataset_type, key_dims, data_id, extension)
        values[-1:] = [name]  # the folders carry every value but the last
        return head + "/".join(values)
    return make


def dataset_relpaths(run: str, dataset_type: str, key_dims: Sequence[str], data_ids: Sequence[Mapping[str, Any]],
                     extension: str) -> list[str]:
    """``dataset_relpath_maker(...)`` of many data IDs (the planner's outputs): one format call per path."""
    make = dataset_relpath_maker(run, dataset_type, key_dims, extension)
    if not key_dims or not data_ids:
        return list(map(make, data_ids))
    texts = [list(map(_safe, map(itemgetter(d), data_ids))) for d in key_dims]  # all str: %s copies them as they are
    head = f"{run_relpath(run)}/{dataset_type}/"
    n = len(key_dims)
    template = "".join([head.replace("%", "%%"), "%s/" * (n - 1), dataset_type.replace("%", "%%"), "_",
                        "_".join(["%s"] * n), extension.replace("%", "%%")])
    paths = list(map(template.__mod__, zip(*texts[:-1], *texts, strict=True)))
    # a name that may be too long for the file system goes the slow way, which measures it in bytes and refuses
    if max(map(len, paths)) - len(head) > NAME_MAX // 4:
        return list(map(make, data_ids))
    return paths


@lru_cache(maxsize=1024)
def run_relpath(run: str) -> str:
    """The folder of a run under the repository root (empty components, as in ``u//x``, are dropped)."""
    return "/".join(_safe(p) for p in run.split("/") if p)


def check_relpath(rel: str, what: str = "output path") -> str:
    """Refuse a path that would leave the repository: absolute, empty, or with a '..' component.

    Such a path comes from a graph edited by hand, or planned elsewhere. Symbolic links the user made inside the
    repository are trusted.
    """
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/") \
            or "\0" in rel:
        raise DatastorePathError(f"{what} {rel!r} is not inside the repository: datastore paths must be relative "
                                 "to the repository root, without '..' components")
    return rel


def _location(path: str, checksum: str, st: os.stat_result, hashed: os.stat_result | None,
              formatter: str) -> dict[str, Any]:
    same = hashed is not None and (st.st_size, st.st_mtime_ns) == (hashed.st_size, hashed.st_mtime_ns)
    return {"path": path, "checksum": checksum, "size": st.st_size, "mtime_ns": st.st_mtime_ns if same else None,
            "formatter": formatter}


class Datastore:
    """The files of a repository under its root, written and read through one formatter per storage class."""

    def __init__(self, root: str | Path, formatter_overrides: Mapping[str, str] | None = None):
        self.root = Path(root).resolve()
        self.overrides = dict(formatter_overrides or {})

    def abspath(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    def formatter(self, storage_class: str) -> Formatter:
        return formatter_for(storage_class, self.overrides)

    def write(self, obj: Any, *, dataset_type: str, storage_class: str, key_dims: Sequence[str],
              data_id: Mapping[str, Any], run: str) -> dict[str, Any]:
        """Write ``obj`` atomically at its layout path; return its location record.

        Never replaces a file already there: it may belong to another dataset (the caller registers this one
        only after the write, too late to save the other file).
        """
        fmt = self.formatter(storage_class)
        rel = dataset_relpath(run, dataset_type, key_dims, data_id, fmt.extension)
        if (self.root / rel).exists() or (self.root / rel).is_symlink():
            raise OpenAstroError(f"{self.root / rel} already exists in the datastore; refusing to overwrite it "
                                 "(if no dataset is registered at that path, it was left by a failed write: remove it)")
        return self.write_at(obj, rel, fmt.name, what=f"{dataset_type} {dict(data_id)}")

    def write_at(self, obj: Any, rel: str, formatter: str, what: str = "") -> dict[str, Any]:
        """Write ``obj`` at ``rel`` (a path planned in advance) with temp file + rename; return its location."""
        fmt = formatter_named(formatter)
        dest = self.root / check_relpath(rel, f"output path of {what}" if what else "output path")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".tmp-{uuid.uuid4().hex[:12]}-{dest.name}"
        try:
            fmt.write(obj, tmp)
            if FSYNC:
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
            os.replace(tmp, dest)
        except FormatterError:
            raise
        except Exception as exc:
            raise FormatterError(f"cannot write {what or rel} as {fmt.name}: {exc}") from exc
        finally:
            if tmp.exists():
                tmp.unlink()
        st = dest.stat()  # before hashing: a change made while hashing then shows as a different stat
        return {"path": rel, "checksum": file_checksum(dest), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                "formatter": fmt.name}

    def read(self, path: str, formatter: str, parameters: Mapping[str, Any] | None = None) -> Any:
        full = self.abspath(path)
        if not full.exists():
            raise OpenAstroError(f"dataset file {full} is missing (registry and datastore disagree; run "
                                 "`openastro-butler verify`)")
        return formatter_named(formatter).read(full, parameters)

    def transfer_in(self, src: Path, *, dataset_type: str, key_dims: Sequence[str], data_id: Mapping[str, Any],
                    run: str, transfer: str, checksum: str, formatter: str = "fits-image",
                    hashed: os.stat_result | None = None) -> dict[str, Any]:
        """Bring an existing file into the datastore by ``transfer`` mode; ``direct`` leaves it where it is.

        ``hashed`` is the source's stat taken when ``checksum`` was computed. The location's ``mtime_ns`` is
        the final file's (for ``direct`` and ``symlink`` the source itself; copies keep the source's mtime),
        recorded only while size and mtime still match ``hashed``: a file changed since it was hashed gets
        None, so workers hash it (and find it is not the registered one).
        """
        if transfer not in TRANSFER_MODES:
            raise OpenAstroError(f"unknown transfer mode {transfer!r}; choose from {', '.join(TRANSFER_MODES)}")
        src = Path(src).resolve()
        if transfer == "direct":
            try:
                path = str(src.relative_to(self.root))
            except ValueError:
                path = str(src)
            return _location(path, checksum, src.stat(), hashed, formatter)
        ext = "".join(src.suffixes[-2:]) if src.name.endswith(".fz") else src.suffix or ".fits"
        rel = dataset_relpath(run, dataset_type, key_dims, data_id, ext)
        dest = self.root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists() or dest.is_symlink():
            raise OpenAstroError(f"{dest} already exists in the datastore")
        tmp = dest.parent / f".tmp-{uuid.uuid4().hex[:12]}-{dest.name}"
        try:
            if transfer == "copy":
                shutil.copy2(src, tmp)
            elif transfer == "symlink":
                os.symlink(src, tmp)
            else:  # move
                shutil.move(src, tmp)
            os.replace(tmp, dest)
        finally:
            if tmp.exists() or tmp.is_symlink():
                tmp.unlink()
        return _location(rel, checksum, src.stat() if transfer == "symlink" else dest.stat(), hashed, formatter)

    def remove(self, path: str) -> None:
        full = self.abspath(path)
        if full.is_relative_to(self.root) and (full.exists() or full.is_symlink()):
            full.unlink()
