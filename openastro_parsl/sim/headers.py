"""FITS files as each observatory would write them (the ingest translators' contract).

lco1m and slt40 look like professional robotic-network frames (EXPID, MJD-OBS, RA/DEC in
degrees, PIXSCALE); ota80 looks like a MaxIm DL amateur frame (no exposure id, EGAIN,
sexagesimal OBJCTRA/OBJCTDEC, XPIXSZ/FOCALLEN, uint16 with BZERO).  Headers carry no
timestamps of the *generation* run, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from astropy.io import fits

from .astro import iso_utc, mjd_to_datetime, sexagesimal_dec, sexagesimal_ra
from .instruments import SITES, Instrument
from .schedule import PlannedExposure


def wcs_cards(inst: Instrument, crval_ra: float, crval_dec: float, rotation_deg: float) -> dict:
    """TAN WCS as plain FITS cards; CRPIX at the detector centre (1-based)."""
    ny, nx = inst.shape
    cd = inst.cd_matrix(rotation_deg)
    return {
        "WCSAXES": 2,
        "CTYPE1": "RA---TAN",
        "CTYPE2": "DEC--TAN",
        "CUNIT1": "deg",
        "CUNIT2": "deg",
        "CRVAL1": round(float(crval_ra), 10),
        "CRVAL2": round(float(crval_dec), 10),
        "CRPIX1": (nx + 1) / 2.0,
        "CRPIX2": (ny + 1) / 2.0,
        "CD1_1": float(f"{cd[0, 0]:.12e}"),
        "CD1_2": float(f"{cd[0, 1]:.12e}"),
        "CD2_1": float(f"{cd[1, 0]:.12e}"),
        "CD2_2": float(f"{cd[1, 1]:.12e}"),
        "RADESYS": "ICRS",
    }


def exposure_number(inst: Instrument, p: PlannedExposure, expid: int) -> int:
    """The exposure id the translator is expected to derive."""
    if inst.name == "ota80":
        return int(mjd_to_datetime(p.mjd_start).strftime("%Y%m%d%H%M%S"))
    return expid


def file_name(inst: Instrument, p: PlannedExposure, expid: int) -> str:
    day = mjd_to_datetime(p.mjd_start).strftime("%Y%m%d")
    if inst.name == "lco1m":
        return f"{SITES[p.site].code}1m01-fa03-{day}-{expid:04d}-e00.fits"
    if inst.name == "slt40":
        return f"SLT40_{day}_{expid:05d}_{p.band}.fits"
    stamp = mjd_to_datetime(p.mjd_start).strftime("%Y%m%d_%H%M%S")
    return f"{p.field}_{inst.filters[p.band]}_{stamp}.fits"


def build_header(inst: Instrument, p: PlannedExposure, expid: int, airmass: float,
                 wcs: dict | None) -> fits.Header:
    """Header cards following each instrument's convention (see module docstring)."""
    h = fits.Header()
    site = SITES[p.site]
    common_obs = [
        ("OBJECT", p.field, "field name"),
        ("FILTER", inst.filters[p.band], "filter"),
        ("EXPTIME", float(p.exptime), "[s] exposure time"),
    ]
    if inst.name in ("lco1m", "slt40"):
        cards = [
            ("TELESCOP", inst.telescope, "telescope"),
            ("INSTRUME", inst.name, "camera"),
            ("SITEID", site.code, "site code"),
            ("LATITUDE", site.lat, "[deg] site latitude"),
            ("LONGITUD", site.lon, "[deg] site longitude (east +)"),
            ("HEIGHT", site.height_m, "[m] site altitude"),
            ("OBSTYPE", "EXPOSE", "observation type"),
            ("EXPID", int(expid), "exposure id"),
            *common_obs,
            ("DATE-OBS", iso_utc(p.mjd_start, 3), "UTC start of exposure"),
            ("MJD-OBS", round(p.mjd_start, 9), "[d] MJD (UTC) start of exposure"),
            ("GAIN", inst.gain, "[e-/ADU]"),
            ("RDNOISE", inst.read_noise, "[e-] read noise"),
            ("SATURATE", inst.saturation_adu, "[ADU] saturation level"),
            ("AIRMASS", round(float(airmass), 4), "airmass at mid-exposure"),
            ("RA", round(p.pointing_ra, 6), "[deg] telescope pointing (ICRS)"),
            ("DEC", round(p.pointing_dec, 6), "[deg] telescope pointing (ICRS)"),
            ("PIXSCALE", inst.pixel_scale, "[arcsec/px] nominal"),
        ]
    else:
        cards = [
            ("IMAGETYP", "Light Frame", "type of image"),
            ("TELESCOP", inst.telescope, "telescope"),
            ("INSTRUME", inst.name, "camera"),
            ("SWCREATE", "MaxIm DL Version 6.50", "acquisition software"),
            *common_obs,
            ("EXPOSURE", float(p.exptime), "[s] exposure time"),
            ("DATE-OBS", iso_utc(p.mjd_start, 0), "UTC start of exposure"),
            ("EGAIN", inst.gain, "[e-/ADU] electronic gain"),
            ("XBINNING", 1, "binning factor"),
            ("YBINNING", 1, "binning factor"),
            ("XPIXSZ", inst.extra["xpixsz_um"], "[um] pixel width incl. binning"),
            ("YPIXSZ", inst.extra["xpixsz_um"], "[um] pixel height incl. binning"),
            ("FOCALLEN", inst.extra["focallen_mm"], "[mm] focal length"),
            ("APTDIA", 80.0, "[mm] aperture diameter"),
            ("CCD-TEMP", -10.0, "[C] sensor temperature"),
            ("SITELAT", sexagesimal_dec(site.lat)[:-2], "site latitude"),
            ("SITELONG", sexagesimal_dec(site.lon)[:-2], "site longitude (east +)"),
            ("AIRMASS", round(float(airmass), 4), "airmass at mid-exposure"),
            ("OBJCTRA", sexagesimal_ra(p.pointing_ra), "nominal object RA (J2000)"),
            ("OBJCTDEC", sexagesimal_dec(p.pointing_dec), "nominal object Dec (J2000)"),
        ]
    for k, v, c in cards:
        h[k] = (v, c)
    if wcs is not None:
        for k, v in wcs.items():
            h[k] = v
    return h


def hdu_bytes(data: np.ndarray, header: fits.Header) -> bytes:
    """Serialise a primary HDU; uint16 data get BITPIX=16 / BZERO=32768 automatically."""
    hdu = fits.PrimaryHDU(data=data, header=header)
    buf = io.BytesIO()
    hdu.writeto(buf, output_verify="exception")
    return buf.getvalue()


def header_length(blob: bytes) -> int:
    """Bytes of the primary header (END card block, padded to 2880)."""
    for i in range(0, len(blob), 80):
        if blob[i:i + 80] == b"END".ljust(80):
            return ((i + 80 + 2879) // 2880) * 2880
    raise ValueError("no END card")


def write_truncated(path: Path, full: bytes, header_bytes: int, rng) -> int:
    """Keep the header and a random 20-70% of the data: a transfer cut short."""
    data_len = len(full) - header_bytes
    keep = header_bytes + int(data_len * float(rng.uniform(0.2, 0.7)))
    path.write_bytes(full[:keep])
    return keep


def write_garbage(path: Path, rng, n_bytes: int = 8640) -> None:
    """Random bytes with a .fits name: no SIMPLE card, nothing parses."""
    path.write_bytes(rng.bytes(n_bytes))
