"""Minor-planet orbit files in MPC's export format (MPCORB.DAT): read them into a table, write them back.

One orbit per line, fixed columns (MPC's "Export Format for Minor-Planet Orbits", 1-based, inclusive):
designation 1-7 (packed), H 9-13, G 15-19, epoch 21-25 (packed, TT), M 27-35, argument of perihelion 38-46,
ascending node 49-57, inclination 60-68 (deg, J2000 ecliptic), e 71-79, n 81-91 (deg/day), a 93-103 (AU),
readable designation 167-194. The file's header (everything down to the line of dashes) and blank lines are
skipped; any other line that does not parse is an error naming the file and line. ``.gz`` files are read
directly. The table has one row per orbit: ``designation, packed, H, G, epoch_mjd, M, peri, node, incl, e, n, a``.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
from astropy.table import Table

from ..errors import OpenAstroError

__all__ = ["MPCORB_COLUMNS", "MpcorbError", "format_mpcorb_line", "pack_designation", "pack_epoch",
           "parse_mpcorb_line", "read_mpcorb",
           "unpack_designation", "unpack_epoch", "validate_orbits"]

MPCORB_COLUMNS = ("designation", "packed", "H", "G", "epoch_mjd", "M", "peri", "node", "incl", "e", "n", "a")
# (name, first column, last column), 1-based inclusive as MPC documents them.
_FIELDS = (("H", 9, 13), ("G", 15, 19), ("M", 27, 35), ("peri", 38, 46), ("node", 49, 57), ("incl", 60, 68),
           ("e", 71, 79), ("n", 81, 91), ("a", 93, 103))
_CENTURY = {"I": 1800, "J": 1900, "K": 2000}
_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class MpcorbError(OpenAstroError):
    """An orbit file is malformed."""


def _char_value(c: str) -> int:
    i = _DIGITS.find(c)
    if i < 0:
        raise ValueError(f"bad packed character {c!r}")
    return i


def unpack_epoch(packed: str) -> float:
    """MJD (TT) of a packed epoch such as ``K232P`` (2023 Feb 25.0)."""
    from astropy.time import Time

    if len(packed) != 5 or packed[0] not in _CENTURY:
        raise ValueError(f"bad packed epoch {packed!r} (expected e.g. K232P)")
    year = _CENTURY[packed[0]] + int(packed[1:3])
    month, day = _char_value(packed[3]), _char_value(packed[4])
    if not (1 <= month <= 12 and 1 <= day <= 31):
        raise ValueError(f"bad packed epoch {packed!r} (month {month}, day {day})")
    return float(Time(f"{year:04d}-{month:02d}-{day:02d}", scale="tt").mjd)


def pack_epoch(mjd_tt: float) -> str:
    """The packed form of a whole-day epoch (MJD, TT); the inverse of ``unpack_epoch``."""
    from astropy.time import Time

    if abs(mjd_tt - round(mjd_tt)) > 1e-9:
        raise ValueError(f"a packed epoch is a whole day (0h TT), not MJD {mjd_tt}")
    ymd = Time(round(mjd_tt), format="mjd", scale="tt").ymdhms
    y, m, d = ymd["year"], ymd["month"], ymd["day"]
    letter = {v: k for k, v in _CENTURY.items()}[int(y) // 100 * 100]
    return f"{letter}{int(y) % 100:02d}{_DIGITS[int(m)]}{_DIGITS[int(d)]}"


def unpack_designation(packed: str) -> str:
    """Readable form of a packed designation: ``00001`` -> ``1``, ``A0345`` -> ``100345``, ``~0000`` -> ``620000``,
    ``K07Tf8A`` -> ``2007 TA418``; anything else (a survey's own label) is returned as it is."""
    p = packed.strip()
    if len(p) == 5 and p.isdigit():
        return str(int(p))
    if len(p) == 5 and p[0].isalpha() and p[1:].isdigit():
        return str(_char_value(p[0]) * 10000 + int(p[1:]))
    if len(p) == 5 and p[0] == "~":
        n = 0
        for c in p[1:]:
            n = n * 62 + _char_value(c)
        return str(620000 + n)
    if len(p) == 7 and p[0] in _CENTURY and p[1:3].isdigit() and p[3].isupper() and p[6].isupper():
        cycle = _char_value(p[4]) * 10 + int(p[5]) if p[5].isdigit() else None
        if cycle is not None:
            return f"{_CENTURY[p[0]] + int(p[1:3])} {p[3]}{p[6]}{cycle or ''}"
    return p


def pack_designation(number: int | None = None, provisional: str | None = None) -> str:
    """MPC's packed form of a number (``1`` -> ``00001``, ``100345`` -> ``A0345``, ``620000`` -> ``~0000``) or, for
    an unnumbered body, of a provisional designation (``2007 TA418`` -> ``K07Tf8A``); the inverse of
    ``unpack_designation``. ValueError for anything else (survey designations such as ``2040 P-L``)."""
    if number is not None:
        n = int(number)
        if n <= 0 or n >= 620000 + 62 ** 4:
            raise ValueError(f"minor-planet number {n} out of range")
        if n < 100000:
            return f"{n:05d}"
        if n < 620000:
            return f"{_DIGITS[n // 10000]}{n % 10000:04d}"
        k, out = n - 620000, ""
        for _ in range(4):
            k, r = divmod(k, 62)
            out = _DIGITS[r] + out
        return "~" + out
    text = (provisional or "").strip()
    parts = text.split()
    if len(parts) != 2 or not parts[0].isdigit() or len(parts[0]) != 4 or len(parts[1]) < 2:
        raise ValueError(f"cannot pack designation {text!r} (expected e.g. 2007 TA418)")
    year, code = int(parts[0]), parts[1]
    letters, digits = code[:2], code[2:]
    century = {v: k for k, v in _CENTURY.items()}.get(year // 100 * 100)
    if century is None or not letters.isalpha() or not letters.isupper() or (digits and not digits.isdigit()):
        raise ValueError(f"cannot pack designation {text!r} (expected e.g. 2007 TA418)")
    cycle = int(digits or 0)
    if cycle >= 620:
        raise ValueError(f"cannot pack designation {text!r}: cycle {cycle} too large")
    return f"{century}{year % 100:02d}{letters[0]}{_DIGITS[cycle // 10]}{cycle % 10}{letters[1]}"


def parse_mpcorb_line(line: str, where: str = "line") -> dict:
    """One orbit from one MPCORB line; ``MpcorbError`` naming ``where`` and the column if it does not parse."""
    text = line.rstrip("\r\n")
    if len(text) < 103:
        raise MpcorbError(f"{where}: {len(text)} characters, an MPCORB orbit line has at least 103 (through a)")
    packed = text[0:7].strip()
    if not packed:
        raise MpcorbError(f"{where}: no designation in columns 1-7")
    row: dict = {"packed": packed}
    for name, lo, hi in _FIELDS:
        cell = text[lo - 1:hi].strip()
        if name == "G" and not cell:
            row[name] = 0.15  # MPC leaves G blank for objects without a fitted slope; 0.15 is its default
            continue
        try:
            row[name] = float(cell)
        except ValueError:
            raise MpcorbError(f"{where}: column {name} (characters {lo}-{hi}) is {cell!r}, not a number") from None
    try:
        row["epoch_mjd"] = unpack_epoch(text[20:25])
    except ValueError as e:
        raise MpcorbError(f"{where}: epoch (characters 21-25): {e}") from None
    if not (0.0 <= row["e"] < 1.0) or row["a"] <= 0 or row["n"] <= 0:
        raise MpcorbError(f"{where}: e={row['e']}, a={row['a']}, n={row['n']}: only elliptic orbits "
                          "(0 <= e < 1, a > 0, n > 0) are propagated")
    readable = text[166:194].strip() if len(text) > 166 else ""
    row["designation"] = readable or unpack_designation(packed)
    return row


def _lines(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="ascii", errors="replace") as fh:
        yield from fh


def read_mpcorb(path: str | Path) -> Table:
    """Every orbit of an MPCORB file (or a subset of one) as a table; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise MpcorbError(f"{path}: no such orbit file")
    lines = list(_lines(path))
    start = next((i + 1 for i, s in enumerate(lines[:200]) if s.startswith("-----")), 0)
    rows = []
    for n, s in enumerate(lines[start:], start + 1):
        if not s.strip():
            continue
        rows.append(parse_mpcorb_line(s, f"{path}:{n}"))
    if not rows:
        raise MpcorbError(f"{path}: no orbit lines")
    table = Table(rows=[[r[c] for c in MPCORB_COLUMNS] for r in rows], names=MPCORB_COLUMNS)
    table.meta["source"] = path.name
    return validate_orbits(table, str(path))


def validate_orbits(table: Table, where: str = "mpcorb") -> Table:
    """The table if it has every orbit column with finite values and unique designations, else MpcorbError."""
    missing = [c for c in MPCORB_COLUMNS if c not in table.colnames]
    if missing:
        raise MpcorbError(f"{where}: missing column(s) {', '.join(missing)}")
    for c in MPCORB_COLUMNS[2:]:
        bad = ~np.isfinite(np.asarray(table[c], float))
        if bad.any():
            raise MpcorbError(f"{where}: row {int(np.flatnonzero(bad)[0]) + 1}: {c} is not finite")
    names = [str(d) for d in table["designation"]]
    if len(set(names)) != len(names):
        seen: set[str] = set()
        dup = next(d for d in names if d in seen or seen.add(d))  # type: ignore[func-returns-value]
        raise MpcorbError(f"{where}: designation {dup!r} appears twice")
    return table


def format_mpcorb_line(packed: str, H: float, G: float, epoch_mjd: float, M: float, peri: float, node: float,
                       incl: float, e: float, a: float, readable: str = "") -> str:
    """One MPCORB line in the export format (n from a by Gauss's constant, as MPC computes it)."""
    n = math.degrees(0.01720209895 / a**1.5)
    head = (f"{packed:<7s} {H:5.2f} {G:5.2f} {pack_epoch(epoch_mjd)} {M % 360.0:9.5f}  {peri % 360.0:9.5f}  "
            f"{node % 360.0:9.5f}  {incl:9.5f}  {e:9.7f} {n:11.8f} {a:11.7f}")
    return head.ljust(166) + readable if readable else head
