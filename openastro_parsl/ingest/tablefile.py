"""Tables people write by hand or download (CSV, ECSV, FITS, Parquet), read so that every bad value is named by
file and line (text files) or row (binary files), and converted column by column.

The campaign set-up (targets, fields) and the reference-catalogue ingest validate a whole file before they
write anything; this module gives them the cells and where each row came from, nothing more.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OpenAstroError

TEXT_FORMATS = {".csv": "csv", ".ecsv": "ecsv"}
BINARY_FORMATS = {".fits": "fits", ".fit": "fits", ".fts": "fits", ".parquet": "parquet", ".parq": "parquet"}
MAX_REPORTED = 20  # bad rows listed one per line; the rest are counted


class TableFileError(OpenAstroError):
    """A table file cannot be read, or has bad rows (each named by file and line)."""


def file_format(path: Path, allowed: tuple[str, ...]) -> str:
    """The format of ``path`` by its suffix (``.fits.gz`` counts as FITS); a clear error for anything else."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] == [".gz"]:
        suffixes = suffixes[:-1]
    fmt = {**TEXT_FORMATS, **BINARY_FORMATS}.get(suffixes[-1] if suffixes else "")
    if fmt not in allowed:
        raise TableFileError(f"{path}: unknown table format {''.join(path.suffixes) or '(no suffix)'!r}; "
                             f"give a {' / '.join(sorted({s for s, f in {**TEXT_FORMATS, **BINARY_FORMATS}.items() if f in allowed}))} file")
    return fmt


@dataclass
class FileTable:
    """The cells of a table file, column by column, with where each row sits in the file."""

    path: Path
    columns: dict[str, list[Any]]                 # name as written -> cell values (None for empty / masked)
    lines: list[int] | None                      # text files: the file line of each row
    units: dict[str, str] = field(default_factory=dict)   # column -> unit text (ECSV, FITS)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (where, why): rows not even split into cells

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def where(self, i: int) -> str:
        """``file:line`` for text files, ``file: row N`` (1-based) for binary ones."""
        return f"{self.path}:{self.lines[i]}" if self.lines is not None else f"{self.path}: row {i + 1}"

    def find(self, name: str) -> str | None:
        """The column called ``name``, ignoring case and surrounding blanks."""
        want = name.strip().lower()
        return next((c for c in self.columns if c.strip().lower() == want), None)

    def cells(self, name: str) -> list[Any]:
        return self.columns[name]

    def floats(self, name: str, what: str, bad: "BadRows") -> np.ndarray:
        """Column ``name`` as floats (NaN where empty); a cell that is not a number is a bad row."""
        out = np.full(len(self), np.nan)
        for i, v in enumerate(self.columns[name]):
            if v is None:
                continue
            try:
                x = float(v)
            except (TypeError, ValueError):
                bad.add(self.where(i), f"{what} {str(v)!r} is not a number")
                continue
            if math.isnan(x):
                continue
            out[i] = x
        return out


def angles(table: FileTable, name: str, kind: str, bad: "BadRows") -> np.ndarray:
    """RA or Dec in degrees from numbers (degrees, unless the column's unit says hours) or sexagesimal text.

    Sexagesimal RA is in hours (``12:34:56.7``, ``12h34m56.7s``, ``12 34 56.7``), Dec in degrees
    (``-05:06:07``, ``-5d06m07s``). RA must be within [0, 360) and Dec within [-90, 90].
    """
    from astropy import units as u

    from .cards import angle_deg

    unit = table.units.get(name, "").strip().lower()
    hours = unit in ("h", "hourangle", "hour")
    out = np.full(len(table), np.nan)
    for i, v in enumerate(table.columns[name]):
        if v is None:
            bad.add(table.where(i), f"{kind} is empty")
            continue
        try:
            x = float(v)
            deg = x * 15.0 if hours else x
        except (TypeError, ValueError):
            try:
                deg = angle_deg(str(v), hours=kind == "ra")
            except (ValueError, TypeError, u.UnitsError) as exc:
                why = str(exc).split(";")[0] if "range" in str(exc) else (
                    f"neither degrees nor sexagesimal ({'hh:mm:ss' if kind == 'ra' else '±dd:mm:ss'})")
                bad.add(table.where(i), f"{kind} {str(v)!r}: {why}")
                continue
        ok = 0.0 <= deg < 360.0 if kind == "ra" else -90.0 <= deg <= 90.0
        if not math.isfinite(deg) or not ok:
            bad.add(table.where(i), f"{kind} {v!r} is outside {'[0, 360) degrees' if kind == 'ra' else '[-90, 90] degrees'}")
            continue
        out[i] = float(deg)
    return out


class BadRows:
    """Problems found while validating a file: reported all at once, the first MAX_REPORTED one per line."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, where: str, message: str) -> None:
        self.items.append((where, message))

    def keep_only(self, wheres: set[str]) -> None:
        """Forget problems of rows that will not be used (another field's rows of a catalogue)."""
        self.items = [(w, m) for w, m in self.items if w in wheres]

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self, what: str) -> None:
        if not self.items:
            return
        rows = len({w for w, _ in self.items})
        ordered = sorted(self.items, key=lambda item: _row_number(item[0]))  # stable: checks keep their order
        shown = [f"{w}: {m}" for w, m in ordered[:MAX_REPORTED]]
        more = len(self.items) - len(shown)
        tail = [f"... and {more} more problem(s)"] if more else []
        raise TableFileError("\n".join([f"{what}: {rows} bad row(s); nothing was written"] + shown + tail))


def _row_number(where: str) -> int:
    """The line or row number at the end of a ``file:line`` / ``file: row N`` location (0 if none)."""
    digits = re.search(r"(\d+)$", where)
    return int(digits.group(1)) if digits else 0


def read_table(path: str | Path, allowed: tuple[str, ...] = ("csv", "ecsv", "fits", "parquet")) -> FileTable:
    """Read ``path`` (format by suffix) into a FileTable; an unreadable file is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise TableFileError(f"{path}: no such file")
    fmt = file_format(path, allowed)
    if fmt == "csv":
        return _read_csv(path)
    from astropy.table import Table

    try:
        table = Table.read(path, format={"ecsv": "ascii.ecsv", "fits": "fits", "parquet": "parquet"}[fmt])
    except Exception as exc:  # astropy raises many kinds for a malformed file
        raise TableFileError(f"{path}: cannot read it as {fmt.upper()}: {exc}") from None
    columns: dict[str, list[Any]] = {}
    units: dict[str, str] = {}
    for name in table.colnames:
        col = table[name]
        if getattr(col, "ndim", 1) != 1:
            continue  # array-valued cells (FITS vectors) are not catalogue values
        mask = np.asarray(getattr(col, "mask", np.zeros(len(col), bool)), bool)
        values = np.asarray(col).tolist()
        columns[name] = [None if m else _plain(v) for v, m in zip(values, mask, strict=True)]
        if col.unit is not None:
            units[name] = str(col.unit)
    lines = _ecsv_lines(path, len(table)) if fmt == "ecsv" else None
    return FileTable(path, columns, lines, units)


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if isinstance(v, str):
        v = v.strip()
        return v or None
    return v


def _read_csv(path: Path) -> FileTable:
    """CSV with a header line; blank lines and lines starting with '#' are skipped; cells stay text."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise TableFileError(f"{path}: cannot read it: {exc}") from None
    header: list[str] | None = None
    columns: dict[str, list[Any]] = {}
    lines: list[int] = []
    problems: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cells = next(csv.reader([line]))
        if header is None:
            header = [c.strip() for c in cells]
            if len(set(h.lower() for h in header)) != len(header) or not all(header):
                raise TableFileError(f"{path}:{number}: the header names a column twice or leaves one unnamed: "
                                     f"{', '.join(header)}")
            columns = {h: [] for h in header}
            continue
        if len(cells) != len(header):
            problems.append((f"{path}:{number}", f"{len(cells)} cells, the header has {len(header)}"))
            continue
        lines.append(number)
        for h, c in zip(header, cells, strict=True):
            columns[h].append(c.strip() or None)
    if header is None:
        raise TableFileError(f"{path}: empty (no header line)")
    return FileTable(path, columns, lines, {}, problems)


def _ecsv_lines(path: Path, n: int) -> list[int] | None:
    """The file line of each ECSV data row (the first non-comment line is the column names); None if unsure."""
    lines = []
    header_seen = False
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if not header_seen:
                header_seen = True
                continue
            lines.append(number)
    return lines if len(lines) == n else None
