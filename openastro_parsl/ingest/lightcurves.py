"""Readers for archival light curves and transit-time tables, into the pipeline's own table schemas.

- TESS (SPOC / TESS data alerts) and Kepler light-curve FITS: PDCSAP or SAP flux, cadences with quality flags
  in the chosen bitmask dropped, times from BTJD / BKJD (``TIME`` + ``BJDREFI`` + ``BJDREFF`` of the
  LIGHTCURVE header, already barycentric in TDB) to BJD_TDB Julian dates. The result is a ``lightcurve``
  Table (docs/datasets.md), so it can be put into a repository and fed to ``periodSearch``/``transitSearch``.
- CSV transit-time tables ``planet, epoch, time, error`` (e.g. an ETD export): validated, one
  ``transitTimes`` Table per planet with its linear ephemeris and O-C.

The quality bitmasks are the missions' documented flags; "default" drops cadences that are certainly bad
(same choice as lightkurve's ``default``), "hard" also cosmic rays and stray light, "hardest" any flag.
"""

from __future__ import annotations

import csv
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


TRANSIT_COLUMNS = ("planet", "epoch", "time", "error")


def read_transit_times_csv(path, *, time_offset: float | None = None) -> Table:
    """Read a ``planet, epoch, time, error`` CSV (times in days, errors in days) into a Table.

    Times must be BJD_TDB Julian dates (values above 2.4e6); a truncated convention (BJD - 2450000, MJD,
    BTJD ...) needs ``time_offset`` (added to every time), and a file of such values without one is refused
    rather than guessed. Errors name the file and the line.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise LightCurveFileError(f"{path}: cannot read ({exc})") from None
    rows = [r for r in csv.reader(line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))]
    if not rows:
        raise LightCurveFileError(f"{path}: empty")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in TRANSIT_COLUMNS if c not in header]
    if missing:
        raise LightCurveFileError(f"{path}: header {rows[0]} lacks column(s) {missing}; expected {list(TRANSIT_COLUMNS)}")
    idx = {c: header.index(c) for c in TRANSIT_COLUMNS}
    planets, epochs, times, errors = [], [], [], []
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) < len(header):
            raise LightCurveFileError(f"{path}:{lineno}: {len(row)} fields, header has {len(header)}")
        try:
            epoch_f = float(row[idx["epoch"]])
            t = float(row[idx["time"]])
            e = float(row[idx["error"]])
        except ValueError:
            raise LightCurveFileError(f"{path}:{lineno}: epoch, time and error must be numbers: {row}") from None
        if epoch_f != int(epoch_f):
            raise LightCurveFileError(f"{path}:{lineno}: epoch {row[idx['epoch']]!r} is not an integer")
        if not (np.isfinite(t) and np.isfinite(e) and e > 0):
            raise LightCurveFileError(f"{path}:{lineno}: time must be finite and error positive: {row}")
        planets.append(row[idx["planet"]].strip())
        epochs.append(int(epoch_f))
        times.append(t + (time_offset or 0.0))
        errors.append(e)
    if not times:
        raise LightCurveFileError(f"{path}: no data rows")
    times_a = np.array(times)
    if time_offset is None and np.min(times_a) < 2.4e6:
        raise LightCurveFileError(f"{path}: times like {times_a.min():.4f} are not BJD_TDB Julian dates; pass "
                                  "time_offset (e.g. 2450000 for BJD-2450000, 2400000.5 for MJD, 2457000 for BTJD)")
    table = Table({"planet": planets, "epoch": np.array(epochs, dtype=np.int64), "time": times_a,
                   "error": np.array(errors)})
    for planet in set(planets):
        sel = table["planet"] == planet
        dup = np.unique(table["epoch"][sel], return_counts=True)
        if np.any(dup[1] > 1):
            raise LightCurveFileError(f"{path}: planet {planet!r} has epoch(s) {dup[0][dup[1] > 1].tolist()} twice")
    table.meta.update({"time_system": "BJD_TDB", "time_format": "jd", "source_file": path.name})
    return table


def transit_times_tables(table: Table) -> dict[str, Table]:
    """One ``transitTimes`` Table (epoch, t_obs, t_obs_err, t_pred, oc, oc_err + ephemeris meta) per planet."""
    from ..tasks.lightcurve.transit import oc_table

    out = {}
    for planet in sorted(set(table["planet"])):
        sel = table[table["planet"] == planet]
        if len(sel) < 2:
            raise LightCurveFileError(f"planet {planet!r}: a linear ephemeris needs 2 transit times, got {len(sel)}")
        oc = oc_table(np.asarray(sel["epoch"]), np.asarray(sel["time"]), np.asarray(sel["error"]))
        oc.meta.update({"planet": planet, "source_file": table.meta.get("source_file")})
        out[planet] = oc
    return out
