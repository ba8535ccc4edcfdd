"""Readers for archival light curves and transit-time tables, into the pipeline's own table schemas.

- TESS (SPOC / TESS data alerts) and Kepler light-curve FITS: PDCSAP or SAP flux, cadences with quality flags
  in the chosen bitmask dropped, times from BTJD / BKJD (``TIME`` + ``BJDREFI`` + ``BJDREFF`` of the
  LIGHTCURVE header, already barycentric in TDB) to BJD_TDB Julian dates. The result is a ``lightcurve``
  Table (docs/datasets.md), so it can be put into a repository and fed to ``periodSearch``/``transitSearch``.
- Ground-based and archival tables (CSV/ECSV with a column mapping, AAVSO downloads; parsed by ``lcformats``):
  ``table_lightcurves`` turns their rows into the same ``lightcurve`` Tables, one per band, times on
  BJD_TDB (``lctime``).
- Transit-time tables (``transit_times``): one ``transitTimes`` Table per planet with its linear ephemeris
  and O-C.

The quality bitmasks are the missions' documented flags; "default" drops cadences that are certainly bad
(same choice as lightkurve's ``default``), "hard" also cosmic rays and stray light, "hardest" any flag.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.table import Table

TESS_FLAGS = {"AttitudeTweak": 1, "SafeMode": 2, "CoarsePoint": 4, "EarthPoint": 8, "Argabrightening": 16,
              "Desat": 32, "ApertureCosmic": 64, "ManualExclude": 128, "Discontinuity": 256,
              "ImpulsiveOutlier": 512, "CollateralCosmic": 1024, "Straylight": 2048, "Straylight2": 4096}
KEPLER_FLAGS = {"AttitudeTweak": 1, "SafeMode": 2, "CoarsePoint": 4, "EarthPoint": 8, "ZeroCrossing": 16,
                "Desat": 32, "Argabrightening": 64, "ApertureCosmic": 128, "ManualExclude": 256,
                "SensitivityDropout": 1024, "ImpulsiveOutlier": 2048, "ArgabrighteningOnCCD": 4096,
                "CollateralCosmic": 8192, "DetectorAnomaly": 16384, "NoFinePoint": 32768, "NoData": 65536,
                "ThrusterFiring": 1048576, "PossibleThrusterFiring": 524288}


def _mask(flags: dict, names) -> int:
    return int(sum(flags[n] for n in names))


BITMASKS = {
    "TESS": {
        "none": 0,
        "default": _mask(TESS_FLAGS, ["AttitudeTweak", "SafeMode", "CoarsePoint", "EarthPoint", "Desat",
                                      "ManualExclude"]),
        "hard": _mask(TESS_FLAGS, ["AttitudeTweak", "SafeMode", "CoarsePoint", "EarthPoint", "Desat",
                                   "ManualExclude", "ApertureCosmic", "CollateralCosmic", "Straylight",
                                   "Straylight2"]),
        "hardest": 65535,
    },
    "Kepler": {
        "none": 0,
        "default": _mask(KEPLER_FLAGS, ["AttitudeTweak", "SafeMode", "CoarsePoint", "EarthPoint", "Desat",
                                        "ManualExclude", "DetectorAnomaly", "NoData", "ThrusterFiring"]),
        "hard": _mask(KEPLER_FLAGS, ["AttitudeTweak", "SafeMode", "CoarsePoint", "EarthPoint", "Desat",
                                     "ManualExclude", "DetectorAnomaly", "NoData", "ThrusterFiring",
                                     "SensitivityDropout", "ApertureCosmic", "CollateralCosmic",
                                     "PossibleThrusterFiring"]),
        "hardest": 2096639,
    },
}
BJD_REFERENCE = {"TESS": 2457000.0, "Kepler": 2454833.0}  # BTJD and BKJD zero points, used when the header lacks them


class LightCurveFileError(ValueError):
    """A light-curve or transit-time file cannot be read; the message names the file and the problem."""


def read_mission_lightcurve(path, *, flux: str = "pdcsap", quality_bitmask: str | int = "default",
                            normalize: bool = True) -> Table:
    """Read a TESS or Kepler light-curve FITS file into a ``lightcurve`` Table.

    Columns: ``time`` (BJD_TDB, JD), ``flux``/``flux_err`` (divided by the median when ``normalize``),
    ``mag``/``mag_err`` (-2.5 log10 of the normalised flux), ``quality``, ``instrument``, ``exposure``
    (cadence number), ``site`` ("space"), ``outlier`` (False: the quality mask already removed bad cadences).
    Meta: target, ra, dec, band (TESS / Kepler), mission, sector or quarter, time_system, flux_column,
    quality_bitmask, n_dropped.
    """
    from astropy.io import fits

    path = Path(path)
    if flux not in ("pdcsap", "sap"):
        raise ValueError(f"flux must be 'pdcsap' or 'sap', not {flux!r}")
    try:
        hdul = fits.open(path, memmap=False)
    except (OSError, ValueError) as exc:
        raise LightCurveFileError(f"{path}: not a readable FITS file ({exc})") from None
    with hdul:
        primary = hdul[0].header
        if "LIGHTCURVE" not in hdul:
            raise LightCurveFileError(f"{path}: no LIGHTCURVE extension (HDUs: {[h.name for h in hdul]})")
        hdr = hdul["LIGHTCURVE"].header
        data = hdul["LIGHTCURVE"].data
        mission = _mission(primary, hdr, path)
        cols = {c.upper() for c in data.columns.names}
        flux_col = f"{flux.upper()}_FLUX"
        qual_col = "QUALITY" if "QUALITY" in cols else "SAP_QUALITY" if "SAP_QUALITY" in cols else None
        for need in ("TIME", flux_col, flux_col + "_ERR"):
            if need not in cols:
                raise LightCurveFileError(f"{path}: LIGHTCURVE table has no {need} column")
        timesys = str(hdr.get("TIMESYS", "TDB")).upper()
        timeref = str(hdr.get("TIMEREF", "SOLARSYSTEM")).upper()
        if timesys != "TDB" or timeref != "SOLARSYSTEM":
            raise LightCurveFileError(f"{path}: times are {timesys}/{timeref}, expected barycentric TDB")
        ref = float(hdr.get("BJDREFI", BJD_REFERENCE[mission])) + float(hdr.get("BJDREFF", 0.0))
        time = np.asarray(data["TIME"], dtype=float)
        f = np.asarray(data[flux_col], dtype=float)
        fe = np.asarray(data[flux_col + "_ERR"], dtype=float)
        quality = np.asarray(data[qual_col], dtype=np.int64) if qual_col else np.zeros(len(time), np.int64)
        cadence = np.asarray(data["CADENCENO"], dtype=np.int64) if "CADENCENO" in cols else np.arange(len(time))
        meta = {
            "target": str(primary.get("OBJECT", path.stem)),
            "ra": _float(primary.get("RA_OBJ")), "dec": _float(primary.get("DEC_OBJ")),
            "mission": mission, "band": mission, "sector": primary.get("SECTOR"), "quarter": primary.get("QUARTER"),
            "exposure_days": _float(hdr.get("TIMEDEL")),
        }
    bitmask = BITMASKS[mission][quality_bitmask] if isinstance(quality_bitmask, str) else int(quality_bitmask)
    good = np.isfinite(time) & np.isfinite(f) & np.isfinite(fe) & (fe > 0) & ((quality & bitmask) == 0)
    if good.sum() == 0:
        raise LightCurveFileError(f"{path}: no cadence left after the quality mask {quality_bitmask!r} ({bitmask})")
    time, f, fe, quality, cadence = time[good], f[good], fe[good], quality[good], cadence[good]
    scale = float(np.median(f)) if normalize else 1.0
    fn = f / scale
    with np.errstate(invalid="ignore", divide="ignore"):
        mag = -2.5 * np.log10(f / float(np.median(f)))
        mag_err = 2.5 / np.log(10) * fe / f
    order = np.argsort(time)
    table = Table({
        "time": (time + ref)[order], "mag": mag[order], "mag_err": mag_err[order],
        "flux": fn[order], "flux_err": (fe / scale)[order], "quality": quality[order],
        "instrument": np.full(len(time), mission), "exposure": cadence[order],
        "site": np.full(len(time), "space"), "outlier": np.zeros(len(time), dtype=bool),
    })
    table.meta.update(meta)
    table.meta.update({"time_system": "BJD_TDB", "time_format": "jd", "flux_column": flux_col,
                       "flux_scale": scale, "quality_bitmask": bitmask, "n_dropped": int((~good).sum()),
                       "source_file": path.name})
    return table


def _float(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _mission(primary, hdr, path) -> str:
    tel = str(primary.get("TELESCOP", hdr.get("TELESCOP", ""))).strip().upper()
    if tel.startswith("TESS"):
        return "TESS"
    if tel.startswith("KEPLER") or tel == "K2":
        return "Kepler"
    raise LightCurveFileError(f"{path}: TELESCOP={tel!r} is neither TESS nor Kepler")


def table_lightcurves(obs, *, target: str, ra: float | None, dec: float | None, time_system: str | None,
                      time_offset: float = 0.0, site=None, band_map: dict[str, str] | None = None) -> dict[str, Table]:
    """``lightcurve`` Tables, one per band, from a table file's ``Observations`` (``lcformats``).

    Times go to BJD_TDB (``lctime``; the format's own system, else ``time_system``). Magnitudes are kept as
    given (calibrated or differential), flux is relative to the median of each instrument in the band (as the
    survey's light curves and the mission reader have it), its error propagated; a flux column gives flux
    relative to that median and ``mag = -2.5 log10(flux)``. ``exposure`` holds the file's line of each row.
    """
    from .lctime import SYSTEMS, Site, TimeSystemError, normalise_system, to_bjd_tdb

    system = obs.time_system or time_system
    if not system:
        raise LightCurveFileError(f"{obs.path}: say which time system the times are in with --time-system "
                                  f"({', '.join(SYSTEMS)})")
    try:
        system = normalise_system(system)
    except TimeSystemError as exc:
        raise LightCurveFileError(str(exc)) from None
    site = site or Site()
    try:
        time = to_bjd_tdb(obs.time, system, offset=time_offset, ra=ra, dec=dec, site=site)
    except TimeSystemError as exc:
        raise LightCurveFileError(f"{obs.path}: {exc}: give the target's --ra/--dec, or define it first with "
                                  "`openastro-butler define-targets REPO FILE`") from None
    if np.min(time) < 2.4e6:
        raise LightCurveFileError(f"{obs.path}:{int(obs.line[np.argmin(time)])}: time {np.min(obs.time)} in "
                                  f"{system} is not a full Julian date; add --time-offset (e.g. 2450000)")
    mapping = dict(band_map or {})
    bands = np.array([mapping.get(b, b) for b in obs.band], dtype=str)
    out = {}
    for band in sorted(set(bands.tolist())):
        sel = np.flatnonzero(bands == band)
        sel = sel[np.argsort(time[sel], kind="stable")]
        value, err, inst = obs.value[sel], obs.error[sel], obs.instrument[sel]
        flux, flux_err, mag, mag_err = (np.empty(len(sel)) for _ in range(4))
        scales = {}
        for name in sorted(set(inst.tolist())):
            m = inst == name
            if obs.kind == "mag":
                ref = float(np.median(value[m]))
                flux[m] = 10 ** (-0.4 * (value[m] - ref))
                flux_err[m] = flux[m] * err[m] * np.log(10) / 2.5
                mag[m], mag_err[m] = value[m], err[m]
            else:
                ref = float(np.median(value[m]))
                flux[m], flux_err[m] = value[m] / ref, err[m] / ref
                mag[m] = -2.5 * np.log10(flux[m])
                mag_err[m] = 2.5 / np.log(10) * err[m] / value[m]
            scales[name] = ref
        table = Table({"time": time[sel], "mag": mag, "mag_err": mag_err, "flux": flux, "flux_err": flux_err,
                       "instrument": inst.astype(str), "exposure": obs.line[sel].astype(np.int64),
                       "site": np.full(len(sel), site.name), "outlier": np.zeros(len(sel), dtype=bool)})
        table.meta.update({"target": target, "band": band, "ra": ra, "dec": dec, "time_system": "BJD_TDB",
                           "time_format": "jd", "source_file": obs.path.name, "source_format": obs.fmt,
                           "source_time_system": system, "time_offset": float(time_offset), "site": site.name,
                           "input": obs.kind, "flux_reference": scales,
                           "source_bands": sorted(set(obs.band[sel].tolist())), "skipped": dict(obs.skipped),
                           "ensemble": False})
        out[band] = table
    return out
