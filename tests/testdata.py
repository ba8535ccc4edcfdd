"""Small test-data helpers importable from any test module (tests/ is on pytest's pythonpath)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def write_frame(path: Path, header: dict, shape=(32, 32), seed=0, dtype=np.float32) -> Path:
    rng = np.random.default_rng(seed)
    data = (rng.normal(100, 5, shape)).astype(dtype)
    hdr = fits.Header()
    for k, v in header.items():
        hdr[k] = v
    fits.PrimaryHDU(data, hdr).writeto(path)
    return path


def lco_header(expid: int, filt: str = "rp", field: str = "demo1") -> dict:
    return {"TELESCOP": "LCO-1m", "INSTRUME": "lco1m", "EXPID": expid, "FILTER": filt, "OBJECT": field,
            "DATE-OBS": f"2026-03-{10 + expid % 15:02d}T03:00:00.000", "MJD-OBS": 61109.125 + expid % 15,
            "EXPTIME": 60.0, "GAIN": 1.0, "RDNOISE": 7.0, "AIRMASS": 1.2, "RA": 150.1, "DEC": 2.2, "PIXSCALE": 0.39}
