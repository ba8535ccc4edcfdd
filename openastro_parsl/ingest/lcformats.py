"""Ground-based and archival light curves as tables: CSV / ECSV with a column mapping, and the AAVSO download.

Each reader returns ``Observations``: one row per measurement with the file line it came from, times still in
the file's own system (``lctime`` puts them on BJD_TDB) and values in mag or flux as the file gives them
(``lightcurves.table_lightcurves`` makes the ``lightcurve`` Tables). A row that cannot be read stops the whole
file with ``file:line: what``; rows a format marks as unusable (AAVSO fainter-than and discrepant estimates)
are skipped and counted, never silently.

The AAVSO International Database download (comma or tab separated; the AAVSO's "Format of Downloaded Data"):
``JD, Magnitude, Uncertainty, HQuncertainty, Band, Observer Code, ..., Validation Flag, ...``. ``JD`` is a
geocentric UTC Julian date. A magnitude ``<m`` is a fainter-than limit (skipped); a trailing ``:`` marks an
uncertain estimate (kept, counted). Validation flags ``T`` (new) and ``D`` (old) mean discrepant (skipped);
``V``/``G`` validated, ``Z``/``P`` pre-validated and ``U``/blank unvalidated are kept. The uncertainty is the
observer's, else AAVSO HQ's; a row with neither (most visual estimates) is skipped and counted. Each observer
code becomes an ``instrument`` of the light curve, so the period search fits each observer's zero-point.
"""

from __future__ import annotations

import csv
import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .lightcurves import LightCurveFileError

COLUMN_KEYS = ("time", "mag", "flux", "err", "band", "instrument")
AAVSO_BANDS = {"SU": "u", "SG": "g", "SR": "r", "SI": "i", "SZ": "z", "Vis.": "vis", "Vis": "vis"}
AAVSO_DISCREPANT = {"T", "D"}


@dataclass
class Observations:
    """Measurements of one file, before time conversion: ``kind`` says whether ``value`` is mag or flux."""

    path: Path
    kind: str
    time: np.ndarray
    value: np.ndarray
    error: np.ndarray
    band: np.ndarray
    instrument: np.ndarray
    line: np.ndarray
    time_system: str | None = None  # what the format itself says (AAVSO: JD); None: the user's --time-system
    fmt: str = "csv"
    skipped: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def parse_columns(text: str | None) -> dict[str, str]:
    """``time=HJD,mag=Vmag,err=eVmag,band=Band`` -> {key: file column}; keys are checked, values kept as given."""
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, col = item.partition("=")
        key = key.strip().lower()
        if key in ("mag_err", "flux_err", "error"):
            key = "err"
        if not sep or not col.strip() or key not in COLUMN_KEYS:
            raise LightCurveFileError(f"--columns {item.strip()!r}: expected KEY=COLUMN with KEY one of "
                                      f"{', '.join(COLUMN_KEYS)}")
        out[key] = col.strip()
    if "mag" in out and "flux" in out:
        raise LightCurveFileError("--columns: map mag or flux, not both")
    return out


def parse_band_map(text: str | None) -> dict[str, str]:
    """``SG=g,V=V`` -> {file band: survey band}."""
    out = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        src, sep, dst = item.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise LightCurveFileError(f"--band-map {item.strip()!r}: expected FILE_BAND=BAND")
        out[src.strip()] = dst.strip()
    return out


def detect_format(path: Path) -> str:
    """``fits``, ``ecsv``, ``aavso`` or ``csv``, from the file's first bytes and header line."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head.startswith(b"SIMPLE"):
        return "fits"
    text = head.decode("utf-8", errors="replace")
    if text.lstrip().startswith("# %ECSV"):
        return "ecsv"
    first = next((ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")), "")
    names = {c.strip().strip('"').lower() for c in _split(first, _delimiter(first))}
    if {"jd", "magnitude", "band"} <= names and ("observer code" in names or "observer_code" in names):
        return "aavso"
    return "csv"


def _lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise LightCurveFileError(f"{path}: cannot read ({exc})") from None
    return [(i, ln) for i, ln in enumerate(text.splitlines(), start=1) if ln.strip()]


def _delimiter(header: str) -> str | None:
    for d in (",", "\t", ";"):
        if d in header:
            return d
    return None  # whitespace


def _split(line: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        try:
            return shlex.split(line)  # blanks and tabs, "quoted names" kept whole
        except ValueError:  # an unpaired quote
            return line.split()
    return next(csv.reader([line], delimiter=delimiter))


def _ecsv_delimiter(lines: list[tuple[int, str]]) -> str | None:
    for _, ln in lines:
        if not ln.startswith("#"):
            break
        body = ln.lstrip("#").strip()
        if body.startswith("delimiter:"):
            value = body.split(":", 1)[1].strip().strip("'\"")
            return None if value in ("", " ") else value
    return None


def _ecsv_meta(path: Path) -> dict:
    from astropy.table import Table

    try:
        return dict(Table.read(path, format="ascii.ecsv").meta)
    except Exception as exc:  # astropy raises many kinds for a broken header
        raise LightCurveFileError(f"{path}: not a readable ECSV file ({str(exc).splitlines()[0]})") from None


def _number(path: Path, lineno: int, column: str, text: str, *, positive: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LightCurveFileError(f"{path}:{lineno}: column {column!r}: {text.strip()!r} is not a number") from None
    if not np.isfinite(value) or (positive and value <= 0):
        need = "a positive number" if positive else "a finite number"
        raise LightCurveFileError(f"{path}:{lineno}: column {column!r}: {text.strip()!r} is not {need}")
    return value


def _header_index(path: Path, lineno: int, names: list[str], wanted: str, flag: str) -> int:
    if wanted in names:
        return names.index(wanted)
    lower = [n.lower() for n in names]
    if wanted.lower() in lower:
        return lower.index(wanted.lower())
    raise LightCurveFileError(f"{path}:{lineno}: no column {wanted!r} (columns: {', '.join(names)}); "
                              f"name the file's columns with {flag}")


def _with_default_columns(columns: dict[str, str], lower_names: list[str]) -> dict[str, str]:
    """Columns named ``time``, ``mag`` / ``flux`` and ``mag_err`` / ``flux_err`` need no mapping."""
    cols = dict(columns)
    if "time" not in cols and "time" in lower_names:
        cols["time"] = "time"
    if "mag" not in cols and "flux" not in cols:
        kind = next((k for k in ("mag", "flux") if k in lower_names), None)
        if kind:
            cols[kind] = kind
    kind = "mag" if "mag" in cols else "flux"
    if "err" not in cols and f"{kind}_err" in lower_names:
        cols["err"] = f"{kind}_err"
    return cols


def read_table_lightcurve(path, columns: dict[str, str], *, fmt: str = "csv", band: str | None = None,
                          instrument: str | None = None) -> Observations:
    """A CSV or ECSV light curve, its columns named by ``columns`` (``parse_columns``).

    Without a ``band`` column every row is in ``band``; without an ``instrument`` column every row is from
    ``instrument`` (default: the file's name without suffix, so two files keep their own zero-points).
    """
    path = Path(path)
    lines = _lines(path)
    meta = _ecsv_meta(path) if fmt == "ecsv" else {}
    delimiter = _ecsv_delimiter(lines) if fmt == "ecsv" else None
    body = [(i, ln) for i, ln in lines if not ln.lstrip().startswith("#")]
    if not body:
        raise LightCurveFileError(f"{path}: no header line and no rows")
    head_no, head = body[0]
    if fmt != "ecsv":
        delimiter = _delimiter(head)
    names = [n.strip() for n in _split(head, delimiter)]
    cols = _with_default_columns(columns, [n.lower() for n in names])
    missing = [k for k in ("time", "err") if k not in cols] + ([] if "mag" in cols or "flux" in cols else ["mag|flux"])
    if missing:
        raise LightCurveFileError(f"{path}:{head_no}: which columns hold {', '.join(missing)}? (columns: "
                                  f"{', '.join(names)}); say it with --columns, e.g. time=HJD,mag=V,err=eV")
    kind = "mag" if "mag" in cols else "flux"
    idx = {k: _header_index(path, head_no, names, v, "--columns") for k, v in cols.items()}
    if "band" not in idx and not band:
        raise LightCurveFileError(f"{path}: no band: map a column with --columns band=COLUMN or pass --band NAME")
    default_inst = instrument or path.stem
    t, v, e, b, inst, ln_no = [], [], [], [], [], []
    for lineno, text in body[1:]:
        row = _split(text, delimiter)
        if len(row) != len(names):
            raise LightCurveFileError(f"{path}:{lineno}: {len(row)} fields, the header has {len(names)}")
        t.append(_number(path, lineno, cols["time"], row[idx["time"]]))
        v.append(_number(path, lineno, cols[kind], row[idx[kind]], positive=kind == "flux"))
        e.append(_number(path, lineno, cols["err"], row[idx["err"]], positive=True))
        bname = row[idx["band"]].strip() if "band" in idx else str(band)
        if not bname:
            raise LightCurveFileError(f"{path}:{lineno}: column {cols['band']!r} is empty")
        b.append(bname)
        inst.append(row[idx["instrument"]].strip() if "instrument" in idx else default_inst)
        ln_no.append(lineno)
    if not t:
        raise LightCurveFileError(f"{path}: a header and no rows")
    return Observations(path, kind, np.array(t), np.array(v), np.array(e), np.array(b, dtype=str),
                        np.array(inst, dtype=str), np.array(ln_no, dtype=np.int64), None, fmt, meta=meta)


AAVSO_COLUMNS = {"time": "JD", "mag": "Magnitude", "err": "Uncertainty", "hq": "HQuncertainty", "band": "Band",
                 "observer": "Observer Code", "flag": "Validation Flag"}


def read_aavso(path) -> Observations:
    """An AAVSO International Database download (see the module docstring for what is kept and skipped)."""
    path = Path(path)
    body = [(i, ln) for i, ln in _lines(path) if not ln.lstrip().startswith("#")]
    if not body:
        raise LightCurveFileError(f"{path}: empty")
    head_no, head = body[0]
    delimiter = _delimiter(head)
    names = [n.strip().strip('"') for n in _split(head, delimiter)]
    idx = {}
    for key, name in AAVSO_COLUMNS.items():
        lower = [n.lower() for n in names]
        if name.lower() in lower:
            idx[key] = lower.index(name.lower())
        elif key in ("time", "mag", "band"):
            raise LightCurveFileError(f"{path}:{head_no}: no {name!r} column: not an AAVSO download "
                                      f"(columns: {', '.join(names)}); read it with --format csv --columns ...")
    skipped: Counter[str] = Counter()
    notes: Counter[str] = Counter()
    t, v, e, b, inst, ln_no = [], [], [], [], [], []

    def cell(row, key):
        return row[idx[key]].strip().strip('"') if key in idx and idx[key] < len(row) else ""

    for lineno, text in body[1:]:
        row = _split(text, delimiter)
        if len(row) < idx["band"] + 1:
            raise LightCurveFileError(f"{path}:{lineno}: {len(row)} fields, the header has {len(names)}")
        mag = cell(row, "mag")
        if mag.startswith("<"):
            skipped["fainter-than"] += 1
            continue
        if cell(row, "flag").upper() in AAVSO_DISCREPANT:
            skipped["discrepant"] += 1
            continue
        if mag.endswith(":"):
            notes["uncertain (:)"] += 1
            mag = mag[:-1]
        err_text = cell(row, "err") or cell(row, "hq")
        try:
            err = float(err_text) if err_text else float("nan")
        except ValueError:
            raise LightCurveFileError(f"{path}:{lineno}: uncertainty {err_text!r} is not a number") from None
        if not (np.isfinite(err) and err > 0):
            skipped["no uncertainty"] += 1
            continue
        t.append(_number(path, lineno, names[idx["time"]], cell(row, "time")))
        v.append(_number(path, lineno, names[idx["mag"]], mag))
        e.append(err)
        band = cell(row, "band")
        if not band:
            raise LightCurveFileError(f"{path}:{lineno}: empty band")
        b.append(band)
        inst.append(cell(row, "observer") or "aavso")
        ln_no.append(lineno)
    if not t:
        raise LightCurveFileError(f"{path}: no usable rows ({_counts(skipped) or 'no data rows'})")
    return Observations(path, "mag", np.array(t), np.array(v), np.array(e), np.array(b, dtype=str),
                        np.array(inst, dtype=str), np.array(ln_no, dtype=np.int64), "JD", "aavso",
                        dict(skipped), dict(notes))


def _counts(counter) -> str:
    return ", ".join(f"{n} {what}" for what, n in sorted(counter.items()))


def describe_skips(obs: Observations) -> str:
    """``12 fainter-than, 3 discrepant skipped; 5 uncertain (:) kept`` (empty when nothing was)."""
    parts = []
    if obs.skipped:
        parts.append(f"{_counts(obs.skipped)} skipped")
    if obs.notes:
        parts.append(f"{_counts(obs.notes)} kept")
    return "; ".join(parts)


def read_observations(path, fmt: str, columns: dict[str, str], *, band: str | None = None,
                      instrument: str | None = None) -> Observations:
    """Dispatch on ``fmt`` (``csv``, ``ecsv``, ``aavso``; ``auto`` looks at the file)."""
    path = Path(path)
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "aavso":
        return read_aavso(path)
    if fmt in ("csv", "ecsv"):
        return read_table_lightcurve(path, columns, fmt=fmt, band=band, instrument=instrument)
    raise LightCurveFileError(f"{path}: format {fmt!r} is not a table format (csv, ecsv, aavso)")
