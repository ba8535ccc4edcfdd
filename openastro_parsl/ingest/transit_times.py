"""Transit-time tables (published lists, ETD exports, papers' tables) into ``transitTimes`` Tables.

One reader for the shapes these tables come in: comma, tab, semicolon or blank separated; a preamble
(titles, captions) before the header line; a units row after it; footnotes ("Note. ...") after the rows.
The header line is the first that names an epoch column and a mid-time column; names are matched after
dropping case, blanks, ``_ - . $ \\ { } ( )`` (so ``T_c`` and ``$\\sigma ({T}_{c})$`` are ``tc`` and
``sigmatc``):

========= ===================================================================================
column    names
========= ===================================================================================
planet    planet, pl, name (optional: without it every row is ``--planet``, else ``b``)
epoch     epoch, i, cycle, epochnumber (integers)
time      time, tc, tmid, midtime, t0, and time-system names: bjd, bjdtdb, hjd, hjdmid, jd, mjd, btjd, bkjd
error     error, err, sigma, sigmatc, tcerr, etc (``e_Tc``), hjderr, bjderr, uncertainty (days, > 0)
dq        dq, dataquality (ETD's data quality, 1 best to 5 worst; rows above ``max_dq`` are skipped)
========= ===================================================================================

Times: ``time_system`` (``lctime``: BJD_TDB, BTJD, BKJD, BJD_UTC, HJD, JD, MJD) and ``time_offset``; without a
system the time column's name gives it (``HJD`` -> HJD_UTC, ``BJD`` -> BJD_TDB), and a neutral name
(``time``, ``T_c``) with full Julian dates is taken as BJD_TDB. Truncated dates (2072.79) without a system
or an offset are refused, never guessed; the message says which flag would read them.

The same planet and epoch twice: ``duplicates="refuse"`` names the lines; ``"combine"`` replaces them by
their inverse-variance mean (error ``1/sqrt(sum 1/sigma^2)``) and records the lines and their chi-square in
the table's meta, so a discrepant pair stays visible.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
from astropy.table import Table

from .lctime import SYSTEMS, Site, TimeSystemError, normalise_system, to_bjd_tdb
from .lightcurves import LightCurveFileError

ALIASES = {
    "planet": {"planet", "pl", "name", "planetname"},
    "epoch": {"epoch", "i", "cycle", "epochnumber", "epochno"},
    "time": {"time", "tc", "tmid", "midtime", "midtransit", "t0", "tmidtransit", "bjd", "bjdtdb", "hjd",
             "hjdmid", "bjdmid", "hjdutc", "jd", "mjd", "btjd", "bkjd", "tmidhjd", "tmidbjd"},
    "error": {"error", "err", "sigma", "sigmatc", "tcerr", "etc", "terr", "timeerr", "timeerror", "hjderr",
              "bjderr", "errtc", "uncertainty", "sigmat", "sigmatmid", "tmiderr"},
    "dq": {"dq", "dataquality"},
}
NAME_SYSTEMS = (("btjd", "BTJD"), ("bkjd", "BKJD"), ("bjd", "BJD_TDB"), ("hjd", "HJD"), ("mjd", "MJD"), ("jd", "JD"))
FOOTNOTE = re.compile(r"^\s*(note|notes|reference|references|\*)\b", re.IGNORECASE)


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-.$\\{}()\[\]]", "", name).lower()


def _split(line: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        return line.split()
    return [c.strip() for c in next(csv.reader([line], delimiter=delimiter))]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _find_header(path: Path, lines: list[tuple[int, str]]):
    """The first line naming epoch, mid-time and error columns (a caption that mentions "epoch" and "time" is
    not a header); failing that, the first naming epoch and mid-time, so the error says what it lacks."""
    candidates = []
    for k, (lineno, text) in enumerate(lines):
        delimiter = next((d for d in ("\t", ",", ";") if d in text), None)
        names = _split(text, delimiter)
        norm = [_norm(n) for n in names]
        idx = {key: next((j for j, n in enumerate(norm) if n in aliases), None) for key, aliases in ALIASES.items()}
        if idx["epoch"] is not None and idx["time"] is not None:
            found = (k, lineno, names, delimiter, {key: j for key, j in idx.items() if j is not None})
            if idx["error"] is not None:
                return found
            candidates.append(found)
    if candidates:
        return candidates[0]
    raise LightCurveFileError(f"{path}: no header line naming an epoch column and a mid-time column (e.g. "
                              "'planet,epoch,time,error'); see docs/lightcurves.md for the names understood")


def _system_from_name(name: str) -> str | None:
    n = _norm(name)
    return next((system for prefix, system in NAME_SYSTEMS if n.startswith(prefix)), None)


def read_transit_times(path, *, time_system: str | None = None, time_offset: float = 0.0,
                       duplicates: str = "refuse", max_dq: int | None = None, planet: str | None = None,
                       ra: float | None = None, dec: float | None = None, site: Site | None = None) -> Table:
    """A transit-time table as ``planet, epoch, time (BJD_TDB), error, line`` rows (module docstring)."""
    path = Path(path)
    if duplicates not in ("refuse", "combine"):
        raise LightCurveFileError(f"--duplicates {duplicates!r}: choose refuse or combine")
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise LightCurveFileError(f"{path}: cannot read ({exc})") from None
    lines = [(i, ln) for i, ln in enumerate(text.splitlines(), start=1)
             if ln.strip() and not ln.lstrip().startswith("#")]
    k, head_no, names, delimiter, idx = _find_header(path, lines)
    if "error" not in idx:
        raise LightCurveFileError(f"{path}:{head_no}: header {names} has no error column (names understood: "
                                  f"{', '.join(sorted(ALIASES['error']))})")
    rows = lines[k + 1:]
    if rows and not any(_is_number(c) for c in _split(rows[0][1], delimiter)):
        rows = rows[1:]  # a units row ("days  days")
    need = max(idx.values()) + 1
    planets, epochs, times, errors, line_nos = [], [], [], [], []
    skipped = 0
    for lineno, line in rows:
        if FOOTNOTE.match(line):
            continue
        cells = _split(line, delimiter)
        if len(cells) < need:
            raise LightCurveFileError(f"{path}:{lineno}: {len(cells)} fields, the header has {len(names)}")
        values = {}
        for key in ("epoch", "time", "error"):
            try:
                values[key] = float(cells[idx[key]])
            except ValueError:
                raise LightCurveFileError(f"{path}:{lineno}: {names[idx[key]]} {cells[idx[key]]!r} is not a "
                                          "number") from None
        if values["epoch"] != int(values["epoch"]):
            raise LightCurveFileError(f"{path}:{lineno}: epoch {cells[idx['epoch']]!r} is not an integer")
        if not (np.isfinite(values["time"]) and np.isfinite(values["error"]) and values["error"] > 0):
            raise LightCurveFileError(f"{path}:{lineno}: the time must be finite and the error positive")
        if max_dq is not None and "dq" in idx:
            try:
                dq = int(float(cells[idx["dq"]]))
            except ValueError:
                raise LightCurveFileError(f"{path}:{lineno}: data quality {cells[idx['dq']]!r} is not a "
                                          "number") from None
            if dq > max_dq:
                skipped += 1
                continue
        planets.append(cells[idx["planet"]].strip() if "planet" in idx else (planet or "b"))
        epochs.append(int(values["epoch"]))
        times.append(values["time"])
        errors.append(values["error"])
        line_nos.append(lineno)
    if not times:
        raise LightCurveFileError(f"{path}: no transit times" + (f" ({skipped} above --max-dq)" if skipped else ""))
    system = _resolve_system(path, text, names[idx["time"]], time_system, time_offset, np.array(times))
    try:
        bjd = to_bjd_tdb(times, system, offset=time_offset, ra=ra, dec=dec, site=site)
    except TimeSystemError as exc:
        raise LightCurveFileError(f"{path}: {exc}; the target needs ra/dec (--ra/--dec, or "
                                  "`openastro-butler define-targets REPO FILE`)") from None
    table = Table({"planet": np.array(planets, dtype=str), "epoch": np.array(epochs, dtype=np.int64),
                   "time": bjd, "error": np.array(errors), "line": np.array(line_nos, dtype=np.int64)})
    table.meta.update({"time_system": "BJD_TDB", "time_format": "jd", "source_file": path.name,
                       "source_time_system": system, "time_offset": float(time_offset), "n_skipped_dq": skipped})
    return _handle_duplicates(path, table, duplicates)


def _resolve_system(path: Path, text: str, time_name: str, given: str | None, offset: float, times) -> str:
    if given:
        try:
            return normalise_system(given)
        except TimeSystemError as exc:
            raise LightCurveFileError(f"{path}: {exc}") from None
    system = _system_from_name(time_name) or "BJD_TDB"
    full = times + offset
    low = system == "MJD" and np.min(full) < 1e4 or system != "MJD" and np.min(full) < 2.4e6
    if low:
        hint = (" (the file mentions 2454833: --time-system BKJD)" if "2454833" in text else
                " (the file mentions 2457000: --time-system BTJD)" if "2457000" in text else "")
        raise LightCurveFileError(f"{path}: times like {np.min(times):.4f} in column {time_name!r} are not full "
                                  f"Julian dates; say what they are with --time-system ({', '.join(SYSTEMS)}) "
                                  f"and/or --time-offset (e.g. 2450000){hint}")
    return system


def _handle_duplicates(path: Path, table: Table, duplicates: str) -> Table:
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for k, (p, e) in enumerate(zip(table["planet"], table["epoch"], strict=True)):
        groups[(str(p), int(e))].append(k)
    dup = {key: rows for key, rows in groups.items() if len(rows) > 1}
    if not dup:
        table.meta["combined"] = []
        return table
    if duplicates == "refuse":
        first = sorted(dup.items(), key=lambda kv: kv[1][0])
        shown = "; ".join(f"planet {p} epoch {e} on lines {', '.join(str(int(table['line'][r])) for r in rows)}"
                          for (p, e), rows in first[:5])
        more = f" (and {len(first) - 5} more)" if len(first) > 5 else ""
        raise LightCurveFileError(f"{path}: the same transit twice: {shown}{more}; pass --duplicates combine to "
                                  "take their inverse-variance mean")
    keep, combined = [], []
    for key, rows in groups.items():
        if len(rows) == 1:
            keep.append(table[rows[0]])
            continue
        t = np.asarray(table["time"][rows], float)
        w = 1.0 / np.asarray(table["error"][rows], float) ** 2
        mean = float(np.sum(w * t) / np.sum(w))
        row = table[rows[0]]
        row["time"], row["error"] = mean, float(1.0 / np.sqrt(np.sum(w)))
        keep.append(row)
        combined.append({"planet": key[0], "epoch": key[1], "lines": [int(table["line"][r]) for r in rows],
                         "chi2": float(np.sum(w * (t - mean) ** 2))})
    out = Table(rows=[tuple(r) for r in keep], names=table.colnames, meta=table.meta)
    out.meta["combined"] = combined
    return out


def read_transit_times_csv(path, *, time_offset: float | None = None) -> Table:
    """A ``planet, epoch, time, error`` CSV with BJD_TDB times (``time_offset`` for truncated ones)."""
    return read_transit_times(path, time_offset=time_offset or 0.0)


def transit_times_tables(table: Table) -> dict[str, Table]:
    """One ``transitTimes`` Table (epoch, t_obs, t_obs_err, t_pred, oc, oc_err + ephemeris meta) per planet."""
    from ..tasks.lightcurve.transit import oc_table

    out = {}
    for planet in sorted(set(table["planet"])):
        sel = table[table["planet"] == planet]
        if len(sel) < 2:
            raise LightCurveFileError(f"{table.meta.get('source_file', 'transit times')}: planet {planet!r}: a "
                                      f"linear ephemeris needs 2 transit times, got {len(sel)}")
        order = np.argsort(np.asarray(sel["epoch"]))
        sel = sel[order]
        oc = oc_table(np.asarray(sel["epoch"]), np.asarray(sel["time"]), np.asarray(sel["error"]))
        oc.meta.update({"planet": planet, "source_file": table.meta.get("source_file"),
                        "source_time_system": table.meta.get("source_time_system"),
                        "combined": [c for c in table.meta.get("combined", []) if c["planet"] == planet]})
        out[planet] = oc
    return out
