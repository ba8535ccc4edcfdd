"""For a frame no translator recognises: the header cards that matter, and an `instruments.yaml` entry that would
translate it, ready to paste into REPO/instruments.yaml.

A new capture program or camera should cost its user one paste, not an afternoon reading the YAML reference.
The suggestion is built from the cards actually present, and validated against the translator schema (and
tried on the header) before it is shown, so what is printed is known to load and to translate this frame.
"""

from __future__ import annotations

from typing import Any

import yaml
from astropy.io import fits

from ..errors import IngestError
from .translator import Translator, TranslatorConfig, _slug

# Where each translator key is looked for, most specific first.
CANDIDATES: dict[str, tuple[str, ...]] = {
    "date": ("DATE-OBS", "DATE_OBS", "DATEOBS", "DATE-BEG", "DATE-STA", "UTCSTART", "DATE"),
    "local_date": ("DATE-LOC",),
    "mjd": ("MJD-OBS",),
    "exptime": ("EXPTIME", "EXPOSURE", "EXP", "EXPOSED", "ITIME", "TEXPTIME"),
    "obs_type": ("IMAGETYP", "OBSTYPE", "FRAMETYP", "FRAME", "IMGTYPE"),
    "physical_filter": ("FILTER", "FILTER1", "FILTNAME", "FILTERID"),
    "field": ("OBJECT", "OBJNAME", "TARGET"),
    "ra": ("OBJCTRA", "RA", "RA_OBJ", "TELRA"),
    "dec": ("OBJCTDEC", "DEC", "DEC_OBJ", "TELDEC"),
    "airmass": ("AIRMASS",),
    "gain": ("EGAIN", "GAIN"),
    "pixel_scale": ("PIXSCALE", "SECPIX", "SCALE"),
    "pixel_size_um": ("XPIXSZ", "PIXSIZE1"),
    "focal_length_mm": ("FOCALLEN", "FOCAL"),
    "site_lat": ("SITELAT", "LATITUDE", "LAT-OBS", "OBSLAT"),
    "site_lon": ("SITELONG", "LONGITUD", "LONG-OBS", "OBSLONG"),
}
SOFTWARE_CARDS = ("SWCREATE", "CREATOR", "PROGRAM", "SOFTWARE", "ORIGIN")
CAMERA_CARDS = ("INSTRUME", "CAMERA", "DETECTOR", "CCD_NAME", "TELESCOP")
_KEY_ORDER = ("date", "local_date", "mjd", "exptime", "obs_type", "physical_filter", "field", "ra", "dec",
              "airmass", "gain", "pixel_scale", "pixel_size_um", "focal_length_mm", "site_lat", "site_lon")


def _present(header: fits.Header, cards: tuple[str, ...]) -> list[str]:
    return [c for c in cards if c in header and header[c] not in (None, "") and str(header[c]).strip()]


def relevant_cards(header: fits.Header) -> list[str]:
    """The header's cards that identify or describe the frame (as ``KEY = value``), in a fixed order."""
    keys = _present(header, SOFTWARE_CARDS + CAMERA_CARDS)
    for name in _KEY_ORDER:
        keys += [c for c in _present(header, CANDIDATES[name]) if c not in keys]
    for extra in ("XBINNING", "NAXIS1", "NAXIS2"):
        if extra in header and extra not in keys:
            keys.append(extra)
    return [f"{k} = {header[k]!r}" for k in keys]


def _software_pattern(value: Any) -> str:
    """A glob for a capture program's name that survives its version changing: the words before the first
    one holding a digit, then ``*`` ('N.I.N.A. 1.10.2.90' -> 'N.I.N.A.*')."""
    words = str(value).strip().split()
    keep: list[str] = []
    for w in words:
        if any(ch.isdigit() for ch in w) or w.lower().startswith(("v.", "version")):
            break
        keep.append(w)
    return (" ".join(keep) + "*") if keep and len(keep) < len(words) else str(value).strip()


def suggest_translator(header: fits.Header, name: str | None = None) -> dict[str, Any]:
    """An ``instruments.yaml`` entry (``{name: config}``) that would translate ``header``.

    Raises IngestError when the header has no observation date at all: no translator can place such a frame
    in time, so there is nothing to suggest but fixing the capture program's settings.
    """
    match: dict[str, list[str]] = {}
    software = _present(header, SOFTWARE_CARDS)
    camera = _present(header, CAMERA_CARDS)
    if software:
        match[software[0]] = [_software_pattern(header[software[0]])]
    if camera:
        match[camera[0]] = [str(header[camera[0]]).strip()]
    if not match:  # nothing names the program or camera: the sensor's size is the next best fingerprint
        match = {k: [str(header[k])] for k in ("NAXIS1", "NAXIS2") if k in header}
    keys: dict[str, Any] = {}
    for key in _KEY_ORDER:
        found = _present(header, CANDIDATES[key])
        if found:
            keys[key] = found
    dates = keys.get("date") or keys.get("local_date")
    if not dates:
        raise IngestError("the header has no observation date card (looked for "
                          f"{', '.join(CANDIDATES['date'] + CANDIDATES['local_date'])}); "
                          "set the capture program to write DATE-OBS")
    keys["exposure"] = {"from_date": dates[0]}
    keys.setdefault("physical_filter", ["FILTER"])
    keys.setdefault("field", ["OBJECT"])
    keys.setdefault("date", ["DATE-OBS"])
    config: dict[str, Any] = {"match": match}
    if camera:
        config["instrument_from"] = [camera[0]]
        if "focal_length_mm" in keys:
            config["name_with_optics"] = True
    config["keys"] = {"exposure": keys.pop("exposure"), **keys}
    if not _present(header, CANDIDATES["physical_filter"]):
        config["default_band"] = "clear"
    entry_name = _slug(name or (str(header[camera[0]]) if camera else "mycamera"))
    cfg = TranslatorConfig.model_validate(config)  # a suggestion that would not load is a bug here, not theirs
    Translator(entry_name, cfg).translate(header)
    return {entry_name: config}


def suggestion_yaml(header: fits.Header, name: str | None = None) -> str:
    """The suggestion as YAML text, with the ``instruments:`` line so it is a whole REPO/instruments.yaml."""
    entry = suggest_translator(header, name)
    return yaml.safe_dump({"instruments": entry}, sort_keys=False, default_flow_style=None, width=110)
