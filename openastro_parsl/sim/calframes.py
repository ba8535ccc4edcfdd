"""Raw mode: the bias, dark and flat frames each camera takes before its first science frame.

Headers follow each camera's convention, as a real one would write them: the robotic-network cameras
(lco1m, slt40) say ``OBSTYPE = BIAS | DARK | SKYFLAT`` and number their frames with EXPID (from
``CALIB_EXPID_BASE``, apart from the science frames); the MaxIm DL camera (ota80) says ``IMAGETYP = 'Bias
Frame' | 'Dark Frame' | 'Flat Field'``. Bias and dark frames carry no FILTER and no OBJECT (a dark has no
passband and no field); flats carry the band's filter. Darks come at two exposure times, so a master dark
that is a rate (scaled by exposure time) is tested, not assumed.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from . import headers, render
from .astro import mjd_to_datetime
from .instruments import SITES, Instrument
from .schedule import PlannedExposure
from .signature import Signature

__all__ = ["CALIB_EXPID_BASE", "FLAT_ADU", "N_BIAS", "N_DARK", "N_FLAT", "calibration_frames", "dark_times"]

CALIB_EXPID_BASE = {"lco1m": 9001, "slt40": 9501}
N_BIAS, N_DARK, N_FLAT = 7, 6, 5   # per instrument; darks half at each of DARK_TIMES, flats per band
FLAT_ADU = 22000.0                 # illumination of the flats' median pixel, ADU above bias
FLAT_EXPTIME = 4.0
GAP_S = 20.0                       # readout and overhead between calibration frames
_KIND_CARD = {"bias": "BIAS", "dark": "DARK", "flat": "SKYFLAT"}
_MAXIM_KIND = {"bias": "Bias Frame", "dark": "Dark Frame", "flat": "Flat Field"}


def dark_times(inst: Instrument) -> tuple[float, float]:
    """Two exposure times bracketing the camera's science exposures."""
    longest = max(inst.exptime.values())
    return (round(longest / 2.0, 1), float(longest))



def _sequence(inst: Instrument) -> list[tuple[str, str | None, float]]:
    """(kind, band, exptime) in the order taken: biases, darks, then flats per band."""
    short, long_ = dark_times(inst)
    out: list[tuple[str, str | None, float]] = [("bias", None, 0.0)] * N_BIAS
    out += [("dark", None, short if i % 2 == 0 else long_) for i in range(N_DARK)]
    for band in inst.bands:
        out += [("flat", band, FLAT_EXPTIME)] * N_FLAT
    return out


def _file_name(inst: Instrument, p: PlannedExposure, expid: int, kind: str) -> str:
    day = mjd_to_datetime(p.mjd_start).strftime("%Y%m%d")
    if inst.name == "lco1m":
        return f"{SITES[p.site].code}1m01-fa03-{day}-{expid:04d}-{kind[0]}00.fits"
    if inst.name == "slt40":
        return f"SLT40_{day}_{expid:05d}_{kind}.fits"
    stamp = mjd_to_datetime(p.mjd_start).strftime("%Y%m%d_%H%M%S")
    return f"{kind.capitalize()}_{stamp}.fits"


def _header(inst: Instrument, p: PlannedExposure, expid: int, kind: str):
    h = headers.build_header(inst, p, expid, 1.0, None)
    for key in ("OBJECT", "AIRMASS", "RA", "DEC", "OBJCTRA", "OBJCTDEC"):
        h.remove(key, ignore_missing=True)
    if kind != "flat":
        h.remove("FILTER", ignore_missing=True)
    if "OBSTYPE" in h:
        h["OBSTYPE"] = (_KIND_CARD[kind], "observation type")
    else:
        h["IMAGETYP"] = (_MAXIM_KIND[kind], "type of image")
    if inst.name in ("lco1m", "slt40"):
        h["RLEVEL"] = (0, "reduction level: raw")
    return h


def calibration_frames(rng: np.random.Generator, inst: Instrument, sig: Signature, first: PlannedExposure):
    """Yield (file name, FITS bytes, truth record) of the camera's calibration frames, taken in the hour
    before ``first`` (its first science frame), at the same site."""
    seq = _sequence(inst)
    total_ms = int(sum((t + GAP_S) * 1000 for _, _, t in seq))
    start = first.start_ms - total_ms - 15 * 60 * 1000
    expid = CALIB_EXPID_BASE.get(inst.name, 0)
    for kind, band, exptime in seq:
        p = replace(first, band=band or first.band, exptime=exptime, start_ms=start, purpose=kind, transit_epoch=None)
        start += int((exptime + GAP_S) * 1000)
        expected = sig.dark_e_per_s * exptime
        if kind == "flat":
            expected = expected + FLAT_ADU * inst.gain * sig.flat
        data = render.expose(rng, np.asarray(expected, dtype=np.float64) + np.zeros(inst.shape), inst.gain,
                             inst.read_noise, sig.bias, inst.saturation_adu, inst.dtype)
        hdr = _header(inst, p, expid, kind)
        name = _file_name(inst, p, expid, kind)
        record = {"file": name, "instrument": inst.name, "kind": kind, "band": band, "exptime": exptime,
                  "exposure": headers.exposure_number(inst, p, expid), "mjd_start": p.mjd_start}
        if inst.name in CALIB_EXPID_BASE:
            expid += 1
        yield name, headers.hdu_bytes(data, hdr), record
