"""Header fixes at ingest (`openastro-butler ingest --set KEY=VALUE`): cards a frame lacks or carries wrong.

Archive frames often keep their filter or date only in COMMENT text, and a capture program may leave FILTER
blank. The fix goes into the repository's copy of the frame (never the user's file), before translation, so
ingest and every task read the same header; a HISTORY card records it. The patched copy is deterministic, so
ingesting the same file with the same fixes again is recognised as a duplicate.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping

from astropy.io import fits

from ..errors import OpenAstroError

__all__ = ["HeaderFixError", "apply_header_fixes", "image_hdu", "parse_header_fixes"]

_KEY = re.compile(r"[A-Z0-9_-]{1,8}")
_RESERVED = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "BZERO", "BSCALE", "XTENSION",
             "PCOUNT", "GCOUNT", "END", "ZIMAGE", "ZBITPIX", "ZCMPTYPE"}


class HeaderFixError(OpenAstroError):
    """A --set value cannot be applied."""


def _value(text: str) -> Any:
    """An int, a float, or the text itself (a date stays a string; FITS has no date type)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_header_fixes(items: Iterable[str]) -> dict[str, Any]:
    """``["FILTER=V", "EXPTIME=80"]`` -> ``{"FILTER": "V", "EXPTIME": 80}``; a malformed item names itself."""
    fixes: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().upper()
        if not sep or not _KEY.fullmatch(key):
            raise HeaderFixError(f"--set {item!r}: expected KEY=VALUE with a FITS keyword of 1-8 letters, digits, "
                                 f"'-' or '_' (e.g. --set FILTER=V)")
        if key in _RESERVED:
            raise HeaderFixError(f"--set {item!r}: {key} describes the file's structure and cannot be set")
        fixes[key] = _value(value.strip())
    return fixes


def image_hdu(hdul: fits.HDUList) -> Any:
    """The frame's image: the first HDU with a 2-D image (an fpack'd frame's is an extension). Ingest reads
    the header there and --set writes it there."""
    return next((h for h in hdul if h.is_image and h.header.get("NAXIS", 0) >= 2), None)


def apply_header_fixes(src: Path, fixes: Mapping[str, Any], workdir: Path) -> Path:
    """A copy of ``src`` in ``workdir`` whose image header carries ``fixes`` (and one HISTORY card per fix).

    The caller moves the copy into the datastore (or deletes it); ``src`` is only read.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    dest = workdir / f"{uuid.uuid4().hex[:12]}-{src.name}"
    shutil.copyfile(src, dest)
    try:
        with fits.open(dest, mode="update", memmap=False) as hdul:
            hdu = image_hdu(hdul)
            if hdu is None:
                raise HeaderFixError("no 2-D image in any HDU")
            header = hdu.header
            for key, value in fixes.items():
                header[key] = value
                header.add_history(f"openastro-butler ingest --set {key}={value}")
    except HeaderFixError:
        dest.unlink(missing_ok=True)
        raise
    except Exception as exc:  # astropy raises many kinds for a file it cannot rewrite
        dest.unlink(missing_ok=True)
        raise HeaderFixError(f"cannot set header cards: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return dest
