"""Tiny FITS frames carrying the real headers of ``headers/`` (see README.md): the header as the capture program
or observatory wrote it, a small seeded synthetic image in place of the original pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

HEADERS = Path(__file__).resolve().parent / "headers"
_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "BZERO", "BSCALE", "PCOUNT",
               "GCOUNT", "XTENSION", "CHECKSUM", "DATASUM", "ZDITHER0", "END"}


def real_header(name: str) -> fits.Header:
    """The stored header ``headers/<name>`` as written (one card per line)."""
    return fits.Header.fromstring((HEADERS / name).read_text(), sep="\n")


def frame_from_header(name: str, out: Path, *, shape=(48, 64), seed: int = 0, update: dict | None = None,
                      drop: tuple[str, ...] = ()) -> Path:
    """Write ``out`` with the real header ``name`` (``update`` cards set, ``drop`` cards removed) over a small
    synthetic image: unsigned 16-bit (BZERO 32768) where the header says so, float32 otherwise; an LCO header
    goes into a fpack-compressed ``SCI`` extension behind an empty primary HDU, as the archive's .fits.fz."""
    src = real_header(name)
    header = fits.Header([c for c in src.cards if c.keyword not in _STRUCTURAL and c.keyword not in drop])
    for key, value in (update or {}).items():
        header[key] = value
    rng = np.random.default_rng(seed)
    sky = rng.normal(500.0, 12.0, shape)
    unsigned = src.get("BITPIX") == 16 and float(src.get("BZERO", 0)) == 32768.0
    if str(out).endswith(".fz"):
        sci = fits.CompImageHDU(sky.astype(np.float32), header, name="SCI", quantize_level=64.0)
        fits.HDUList([fits.PrimaryHDU(), sci]).writeto(out)
    else:
        data = np.clip(sky, 0, 65535).astype(np.uint16) if unsigned else sky.astype(np.float32)
        fits.PrimaryHDU(data, header).writeto(out)
    return out
