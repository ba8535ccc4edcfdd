"""Reading single header values the way capture programs write them: dates with or without a time zone,
sexagesimal angles, frame types under their many spellings, and header values against glob patterns.

Kept apart from the translators so the rules for one card are one function each, testable on strings.
"""

from __future__ import annotations

import re
import warnings
from typing import TYPE_CHECKING, Any

from ..errors import IngestError

if TYPE_CHECKING:  # astropy is imported where a card is read: the planner imports this module, never reads one
    from astropy.io import fits
    from astropy.time import Time

# obs_type values: what a frame is for. Calibration routes on them; only `science` frames are raws to reduce.
SCIENCE, BIAS, DARK, FLAT, OTHER = "science", "bias", "dark", "flat", "other"
OBS_TYPES = (SCIENCE, BIAS, DARK, FLAT, OTHER)

# Spellings seen in IMAGETYP / OBSTYPE / FRAMETYP / FRAME (MaxIm DL, N.I.N.A., SharpCap, ASIAIR, INDI/Ekos,
# SGP, APT, LCO), compared case-insensitively after trimming.
_OBS_TYPE_SPELLINGS = {
    SCIENCE: ("light", "light frame", "lightframe", "object", "science", "expose", "master light"),
    BIAS: ("bias", "bias frame", "zero", "offset", "master bias"),
    DARK: ("dark", "dark frame", "master dark", "darkflat", "dark flat", "flatdark", "flat dark"),
    FLAT: ("flat", "flat field", "flat frame", "flatfield", "skyflat", "sky flat", "domeflat", "dome flat",
           "lampflat", "lamp flat", "twilight flat", "master flat"),
}
_OBS_TYPE_OF = {spelling: kind for kind, spellings in _OBS_TYPE_SPELLINGS.items() for spelling in spellings}

_ZONE = re.compile(r"^(?P<base>.+?)(?:(?P<z>Z)|(?P<sign>[+-])(?P<hh>\d\d):?(?P<mm>\d\d))$")
_OLD_DATE = re.compile(r"\d\d/\d\d/\d\d")


def obs_type(value: Any, extra: dict[str, str] | None = None) -> str:
    """``science``/``bias``/``dark``/``flat``/``other`` for a frame-type card value; ``extra`` (a translator's
    own spellings, lower case) is looked at first. A value nobody spells that way is ``other``, never science."""
    text = " ".join(str(value).strip().lower().replace("_", " ").split())
    if extra and text in extra:
        return extra[text]
    return _OBS_TYPE_OF.get(text, OTHER)


def glob_matches(pattern: str, value: Any) -> bool:
    """Case-insensitive match of a header value against ``pattern``: ``*`` is any run of characters, ``?`` one
    character, anything else literal (so filter names like ``SDSS-r'`` or brackets need no escaping)."""
    text = str(value).strip()
    if "*" not in pattern and "?" not in pattern:
        return text.lower() == pattern.strip().lower()
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern.strip())
    return re.fullmatch(regex, text, flags=re.IGNORECASE | re.DOTALL) is not None


def header_matches(header: fits.Header, match: dict[str, list[str]]) -> bool:
    """Every key of ``match`` is in the header (non-empty) and its value matches one of the patterns."""
    for key, patterns in match.items():
        if key not in header or header[key] in (None, ""):
            return False
        if not any(glob_matches(p, header[key]) for p in patterns):
            return False
    return True


def parse_date(header: fits.Header, card: str) -> Time:
    """UTC time of a date card: ISO 8601 with or without fractional seconds (any number of digits), with a
    ``Z`` or ``+hh:mm`` zone (converted to UTC), or the old ``dd/mm/yy`` with the time in UT / TIME-OBS."""
    from erfa import ErfaWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ErfaWarning)  # pre-1960 plates: UTC is "dubious", still right enough
        return _read_date(header, card)


def _read_date(header: fits.Header, card: str) -> Time:
    from astropy.time import Time, TimeDelta

    value = str(header[card]).strip()
    try:
        if _OLD_DATE.fullmatch(value):
            d, m, y = (int(x) for x in value.split("/"))
            year = 1900 + y if y >= 40 else 2000 + y
            clock = str(header.get("UT", header.get("TIME-OBS", "00:00:00"))).strip()
            return Time(f"{year:04d}-{m:02d}-{d:02d}T{clock}", format="isot", scale="utc")
        text, offset_min = value.replace(" ", "T", 1) if "T" not in value else value, 0
        zone = _ZONE.match(text) if "T" in text else None
        if zone is not None and (zone["z"] or zone["sign"]):
            text = zone["base"]
            if zone["sign"]:
                offset_min = (1 if zone["sign"] == "+" else -1) * (int(zone["hh"]) * 60 + int(zone["mm"]))
        t = Time(text, format="isot", scale="utc")
        return t - TimeDelta(offset_min * 60.0, format="sec") if offset_min else t
    except ValueError as exc:
        raise IngestError(f"{card}={value!r} is not a date I can read ({str(exc).splitlines()[0]})") from None


def has_zone(value: Any) -> bool:
    """Whether a date string says its time zone (``Z`` or ``+hh:mm``): a local time without one is not UTC."""
    text = str(value).strip()
    zone = _ZONE.match(text) if "T" in text else None
    return zone is not None and bool(zone["z"] or zone["sign"])


def angle_deg(value: Any, hours: bool) -> float:
    """Degrees from a number (already degrees) or a sexagesimal string (hours when ``hours``)."""
    if isinstance(value, (int, float)):
        return float(value)
    import astropy.units as u
    from astropy.coordinates import Angle

    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    return float(Angle(text, unit=u.hourangle if hours else u.deg).deg)
