"""Reference catalogues: a local file (or the repository's ``refcat`` dataset), or Gaia DR3 through astroquery,
cached by sky region in SQLite.

Everything runs offline from a local catalogue; Gaia is optional. A cone fetched once is kept in the cache, and
any later cone inside it (same catalogue, no fainter limit) is answered from the cache without touching the
network. An uncached cone with the archive unreachable raises ``RefcatUnavailable`` naming the cone and the
cache, never a bare socket error (``cone_cache.through_cache``: the rule the archive-answer cache follows too).

Catalogue columns (``docs/datasets.md``): ``id, ra, dec, g, r, g_err, r_err`` (deg, mag). Gaia rows carry SDSS
g and r from DR3's synthetic photometry (``gaiadr3.synthetic_photometry_gspc``, the XP spectra integrated over
the SDSS passbands; G < 17.65), plus ``pmra, pmdec`` (mas/yr) at epoch 2016.0 and ``sel_mag`` (Gaia G).
An optional boolean ``variable`` marks known variables (Gaia's ``phot_variable_flag == 'VARIABLE'``), which
calibration and ensemble photometry keep out of their comparison stars.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..errors import OpenAstroError
from .cone_cache import Region, SqliteCache, is_network_error, through_cache
from .match import angular_separation

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["GAIA_ADQL", "GAIA_EPOCH", "REFCAT_COLUMNS", "Region", "RefcatCache", "RefcatError", "RefcatUnavailable",
           "angular_separation", "cone", "gaia_dr3_fetch", "gaia_to_refcat", "is_network_error", "propagate",
           "query_refcat", "read_refcat", "validate_refcat"]

REFCAT_COLUMNS = ("id", "ra", "dec", "g", "r", "g_err", "r_err")
_EXTRA = ("pmra", "pmdec", "sel_mag")
GAIA_DR3 = "gaia_dr3"
GAIA_EPOCH = 2016.0
GAIA_SERVER = "https://gea.esac.esa.int/"
GSPC_LIMIT_G = 17.65  # faintest G in the synthetic photometry standard catalogue
GAIA_SERVER_ENV = "OPENASTRO_GAIA_SERVER"  # another archive (a mirror; a closed port in tests)
# What a plan lacking a field's catalogue tells the user to run (PrerequisiteInput hint; the planner fills it in).
REFCAT_HINT = ("add it with `openastro-butler ingest-refcat {repo} FILE --field {field}` or "
               "`openastro-butler fetch-refcat {repo} --field {field}`")
_MAG_PER_FRAC = 2.5 / np.log(10.0)


class RefcatError(OpenAstroError):
    """A reference catalogue is malformed or cannot be read."""


class RefcatUnavailable(RefcatError):
    """The cone is not cached and the archive cannot be reached."""


# ----------------------------------------------------------------------------------------------------------
# Local catalogues


def validate_refcat(table: Table, where: str = "refcat") -> Table:
    """The catalogue with its required columns as plain floats / int64 ids; errors name ``where``."""
    from astropy.table import Table

    missing = [c for c in REFCAT_COLUMNS if c not in table.colnames]
    if missing:
        raise RefcatError(f"{where}: missing column(s) {', '.join(missing)} (has {', '.join(table.colnames)}; "
                          f"needs {', '.join(REFCAT_COLUMNS)})")
    out = Table(table, copy=True)
    try:
        out["id"] = np.asarray(out["id"], dtype=np.int64)
        for c in REFCAT_COLUMNS[1:] + tuple(c for c in _EXTRA if c in out.colnames):
            out[c] = np.asarray(np.ma.filled(np.ma.asarray(out[c], dtype=float), np.nan), dtype=float)
        if "variable" in out.colnames:
            out["variable"] = np.asarray(np.ma.filled(np.ma.asarray(out["variable"]), False), dtype=bool)
    except (TypeError, ValueError) as exc:
        raise RefcatError(f"{where}: non-numeric catalogue column: {exc}") from None
    ra, dec = out["ra"], out["dec"]
    bad = ~(np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90))
    if bad.any():
        raise RefcatError(f"{where}: {int(bad.sum())} row(s) with invalid ra/dec (first id {int(out['id'][bad][0])})")
    out["ra"] = np.mod(ra, 360.0)
    return out


def read_refcat(path: str | Path) -> Table:
    """A local catalogue file (ECSV, FITS, Parquet, CSV: whatever astropy reads), validated."""
    from astropy.table import Table

    path = Path(path)
    if not path.exists():
        raise RefcatError(f"{path}: no such reference catalogue")
    fmt = {".ecsv": "ascii.ecsv", ".csv": "ascii.csv", ".parq": "parquet", ".parquet": "parquet"}.get(path.suffix)
    try:
        table = Table.read(path, format=fmt) if fmt else Table.read(path)
    except Exception as exc:  # astropy raises many kinds for a bad file
        raise RefcatError(f"{path}: unreadable reference catalogue: {exc}") from None
    return validate_refcat(table, str(path))


def cone(table: Table, ra: float, dec: float, radius_deg: float) -> Table:
    """Rows within ``radius_deg`` of (ra, dec)."""
    if len(table) == 0:
        return table[:0]
    return table[angular_separation(ra, dec, table["ra"], table["dec"]) <= radius_deg]


def propagate(table: Table, epoch: float, ref_epoch: float = GAIA_EPOCH) -> Table:
    """Positions moved linearly by their proper motions from ``ref_epoch`` to ``epoch`` (Julian years).

    Rows without proper motions are left where they are; a 10-year baseline moves a typical Gaia star by
    tens of mas, enough to matter for astrometry, not for the photometric cross-match.
    """
    from astropy.table import Table

    out = Table(table, copy=True)
    if "pmra" not in out.colnames or "pmdec" not in out.colnames:
        return out
    dt = float(epoch) - ref_epoch
    pmra = np.nan_to_num(np.asarray(out["pmra"], float))
    pmdec = np.nan_to_num(np.asarray(out["pmdec"], float))
    dec = np.asarray(out["dec"], float) + pmdec * dt / 3.6e6
    ra = np.asarray(out["ra"], float) + pmra * dt / 3.6e6 / np.cos(np.deg2rad(out["dec"]))
    out["ra"], out["dec"] = np.mod(ra, 360.0), dec
    return out


# ----------------------------------------------------------------------------------------------------------
# Region cache


_SCHEMA = """
CREATE TABLE IF NOT EXISTS regions (
    region_id INTEGER PRIMARY KEY AUTOINCREMENT,
    catalogue TEXT NOT NULL, ra REAL NOT NULL, dec REAL NOT NULL, radius REAL NOT NULL,
    mag_limit REAL NOT NULL, n_rows INTEGER NOT NULL, fetched_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS stars (
    region_id INTEGER NOT NULL REFERENCES regions(region_id) ON DELETE CASCADE,
    id INTEGER NOT NULL, ra REAL NOT NULL, dec REAL NOT NULL,
    g REAL, r REAL, g_err REAL, r_err REAL, pmra REAL, pmdec REAL, sel_mag REAL, variable REAL
);
CREATE INDEX IF NOT EXISTS stars_region ON stars(region_id);
"""
_STAR_COLUMNS = REFCAT_COLUMNS + _EXTRA + ("variable",)


class RefcatCache(SqliteCache):
    """Catalogue cones in one SQLite file: each fetched region with its rows, found again by containment."""

    SCHEMA = _SCHEMA
    ENV, FILE = "OPENASTRO_REFCAT_CACHE", "refcat.sqlite"

    def _upgrade(self, con: sqlite3.Connection) -> None:
        have = {row[1] for row in con.execute("PRAGMA table_info(stars)")}
        if "variable" not in have:  # a cache written before the flag was kept
            con.execute("ALTER TABLE stars ADD COLUMN variable REAL")

    def regions(self, catalogue: str | None = None) -> list[dict]:
        sql = "SELECT region_id, catalogue, ra, dec, radius, mag_limit, n_rows, fetched_at FROM regions"
        args: tuple = ()
        if catalogue is not None:
            sql, args = sql + " WHERE catalogue = ?", (catalogue,)
        with self.connect() as con:
            rows = con.execute(sql + " ORDER BY region_id", args).fetchall()
        keys = ("region_id", "catalogue", "ra", "dec", "radius", "mag_limit", "n_rows", "fetched_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def find(self, catalogue: str, region: Region, mag_limit: float) -> int | None:
        """The smallest cached region of ``catalogue`` containing ``region`` with a limit at least as faint."""
        best = None
        for r in self.regions(catalogue):
            if r["mag_limit"] + 1e-9 >= mag_limit and Region(r["ra"], r["dec"], r["radius"]).contains(region):
                if best is None or r["radius"] < best["radius"]:
                    best = r
        return None if best is None else int(best["region_id"])

    def put(self, catalogue: str, region: Region, mag_limit: float, table: Table) -> int:
        """Store a fetched cone (one transaction: a killed process leaves no half region)."""
        table = validate_refcat(table, f"{catalogue} cone ({region.ra:.5f}, {region.dec:.5f})")
        cols = [np.asarray(table[c]) if c in table.colnames else np.full(len(table), np.nan) for c in _STAR_COLUMNS]
        with self.connect() as con:
            cur = con.execute("INSERT INTO regions (catalogue, ra, dec, radius, mag_limit, n_rows, fetched_at) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?)", (catalogue, float(region.ra), float(region.dec),
                                                               float(region.radius), float(mag_limit), len(table),
                                                               time.time()))
            rid = int(cur.lastrowid)
            rows = [(rid, int(cols[0][i]), *(None if not np.isfinite(c[i]) else float(c[i]) for c in cols[1:]))
                    for i in range(len(table))]
            con.executemany(f"INSERT INTO stars (region_id, {', '.join(_STAR_COLUMNS)}) "
                            f"VALUES ({', '.join('?' * (len(_STAR_COLUMNS) + 1))})", rows)
        return rid

    def get(self, region_id: int, region: Region | None = None, mag_limit: float | None = None) -> Table:
        """The rows of a cached region, cut to ``region`` and to ``sel_mag <= mag_limit`` when given."""
        from astropy.table import Table

        with self.connect() as con:
            rows = con.execute(f"SELECT {', '.join(_STAR_COLUMNS)} FROM stars WHERE region_id = ? ORDER BY rowid",
                               (region_id,)).fetchall()
        data = np.array(rows, dtype=object).reshape(-1, len(_STAR_COLUMNS))
        table = Table({c: (data[:, k].astype(np.int64) if c == "id" else
                           np.array([np.nan if v is None else v for v in data[:, k]], dtype=float))
                       for k, c in enumerate(_STAR_COLUMNS)})
        table["variable"] = np.nan_to_num(np.asarray(table["variable"], dtype=float)) > 0
        if region is not None:
            table = cone(table, region.ra, region.dec, region.radius)
        if mag_limit is not None:
            sel = np.asarray(table["sel_mag"], float)
            table = table[~(sel > mag_limit)]  # rows without a selection magnitude are kept
        return table


Fetch = Callable[[float, float, float, float], "Table"]


def query_refcat(ra: float, dec: float, radius_deg: float, *, cache: RefcatCache | str | Path | None = None,
                 fetch: Fetch | None = None, catalogue: str = GAIA_DR3, mag_limit: float = GSPC_LIMIT_G,
                 offline: bool = False, refresh: bool = False) -> Table:
    """The catalogue cone around (ra, dec): from the cache when a cached region contains it, else fetched
    (``fetch(ra, dec, radius_deg, mag_limit) -> Table``, by default Gaia DR3 from ``gaia_server()``), stored, and
    returned.

    ``offline`` forbids fetching. ``refresh`` fetches even a cached cone, falling back to the cache when the archive
    is unreachable. An unreachable archive or ``offline`` with the cone uncached raises ``RefcatUnavailable``. The
    table's meta says where it came from: ``refcat_source`` (``cache``, ``archive`` or ``offline-cache``, the
    latter with ``refcat_offline_reason``) and ``refcat_cache`` (the cache file).
    """
    cache = cache if isinstance(cache, RefcatCache) else RefcatCache(cache)
    region = Region(float(ra) % 360.0, float(dec), float(radius_deg))
    hit = cache.find(catalogue, region, mag_limit)
    if fetch is None:
        def fetch(ra_: float, dec_: float, r_: float, m_: float) -> Table:
            return gaia_dr3_fetch(ra_, dec_, r_, m_, server=gaia_server())

    def store(table: Table) -> Table:
        return cache.get(cache.put(catalogue, region, mag_limit, table), region, mag_limit)

    got = through_cache(None if hit is None else partial(cache.get, hit, region, mag_limit),
                        partial(fetch, region.ra, region.dec, region.radius, mag_limit), store,
                        what=f"{catalogue} cone ra={region.ra:.5f} dec={region.dec:.5f} r={region.radius:.4f} deg "
                             f"(G < {mag_limit})", cache_path=cache.path, offline=offline, refresh=refresh,
                        unavailable=RefcatUnavailable,
                        advice="use a local reference catalogue or fetch it once with a network")
    table = got.body
    table.meta.update({"refcat_source": got.source, "refcat_cache": str(cache.path)})
    if got.reason:
        table.meta["refcat_offline_reason"] = got.reason
    return table


# ----------------------------------------------------------------------------------------------------------
# Gaia DR3

GAIA_ADQL = """SELECT gs.source_id, gs.ra, gs.dec, gs.pmra, gs.pmdec, gs.phot_g_mean_mag, gs.phot_variable_flag,
 sp.g_sdss_mag, sp.g_sdss_flux, sp.g_sdss_flux_error, sp.r_sdss_mag, sp.r_sdss_flux, sp.r_sdss_flux_error
FROM gaiadr3.gaia_source AS gs
JOIN gaiadr3.synthetic_photometry_gspc AS sp ON sp.source_id = gs.source_id
WHERE 1 = CONTAINS(POINT('ICRS', gs.ra, gs.dec), CIRCLE('ICRS', {ra:.8f}, {dec:.8f}, {radius:.8f}))
 AND gs.phot_g_mean_mag < {mag_limit:.3f}
 AND sp.g_sdss_mag IS NOT NULL AND sp.r_sdss_mag IS NOT NULL"""


def gaia_to_refcat(raw: Table) -> Table:
    """Gaia DR3 + GSPC rows as a reference catalogue (magnitude errors from the flux errors)."""
    from astropy.table import Table

    cols = {c.lower(): c for c in raw.colnames}

    def col(name):
        if name not in cols:
            raise RefcatError(f"Gaia result lacks column {name!r} (has {', '.join(raw.colnames)})")
        return np.asarray(np.ma.filled(np.ma.asarray(raw[cols[name]], dtype=float), np.nan), dtype=float)

    out = Table({
        "id": np.asarray(raw[cols["source_id"]], dtype=np.int64),
        "ra": col("ra"), "dec": col("dec"),
        "g": col("g_sdss_mag"), "r": col("r_sdss_mag"),
        "g_err": _MAG_PER_FRAC * col("g_sdss_flux_error") / col("g_sdss_flux"),
        "r_err": _MAG_PER_FRAC * col("r_sdss_flux_error") / col("r_sdss_flux"),
        "pmra": col("pmra"), "pmdec": col("pmdec"), "sel_mag": col("phot_g_mean_mag"),
    })
    if "phot_variable_flag" in cols:
        flag = np.ma.filled(np.ma.asarray(raw[cols["phot_variable_flag"]]).astype(str), "")
        out["variable"] = np.char.strip(np.char.upper(np.asarray(flag, dtype=str))) == "VARIABLE"
    return out[np.isfinite(out["g"]) & np.isfinite(out["r"])]


def gaia_dr3_fetch(ra: float, dec: float, radius_deg: float, mag_limit: float = GSPC_LIMIT_G, *,
                   server: str = GAIA_SERVER) -> Table:
    """One cone from the ESA Gaia archive (TAP, asynchronous job) as a reference catalogue."""
    from astroquery.gaia import GaiaClass

    gaia = GaiaClass(gaia_tap_server=server, gaia_data_server=server, show_server_messages=False)
    job = gaia.launch_job_async(GAIA_ADQL.format(ra=ra, dec=dec, radius=radius_deg, mag_limit=mag_limit))
    return gaia_to_refcat(job.get_results())


# ----------------------------------------------------------------------------------------------------------
# Magnitudes in other systems -> SDSS g, r (published transformations, with their scatter and colour range)


@dataclass(frozen=True)
class Transformation:
    """A published transformation of one photometric system to SDSS g, r."""

    system: str
    inputs: tuple[str, ...]           # the magnitudes it needs, in order
    colour: str                       # the colour it is a function of, as written in the reference
    colour_range: tuple[float, float]  # where it was fitted: rows outside are dropped
    scatter: tuple[float, float]      # rms of the fit for g and r (mag), added in quadrature to the errors
    reference: str


JOHNSON = Transformation(
    "johnson", ("B", "V"), "B-V", (-0.2, 1.5), (0.02, 0.03),
    "Jester et al. 2005, AJ 130, 873, Table 1 (all stars with Rc-Ic < 1.15): g = V + 0.60 (B-V) - 0.12, "
    "r = V - 0.42 (B-V) + 0.11; B-V kept within -0.2..1.5, the main-sequence stars of that Rc-Ic range")
# Riello et al. 2021, A&A 649, A3, Table C.2 (ranges: Table C.1); also the Gaia (E)DR3 documentation, 5.5.1.
# G - g and G - r as polynomials in x = BP - RP, lowest order first.
_GAIA_G_MINUS_G = (0.2199, -0.6365, -0.1548, 0.0064)
_GAIA_G_MINUS_R = (-0.09837, 0.08592, 0.1907, -0.1701, 0.02263)
GAIA = Transformation(
    "gaia", ("G", "BP", "RP"), "BP-RP", (0.3, 3.0), (0.0745, 0.03776),
    "Riello et al. 2021, A&A 649, A3, Tables C.1-C.2: G-g = 0.2199 - 0.6365x - 0.1548x^2 + 0.0064x^3 "
    "(0.3 < x < 3.0), G-r = -0.09837 + 0.08592x + 0.1907x^2 - 0.1701x^3 + 0.02263x^4 (0 < x < 3.0), x = BP-RP")
TRANSFORMATIONS = {t.system: t for t in (JOHNSON, GAIA)}


def _poly(coeffs: tuple[float, ...], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A polynomial (lowest order first) and its derivative at ``x``."""
    value = np.polynomial.polynomial.polyval(x, coeffs)
    slope = np.polynomial.polynomial.polyval(x, np.polynomial.polynomial.polyder(coeffs))
    return value, slope


def to_sdss(system: str, mags: dict[str, np.ndarray], errs: dict[str, np.ndarray]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """SDSS g, r, g_err, r_err and the rows within the transformation's colour range.

    ``mags`` / ``errs`` hold the system's input magnitudes by name (``B``, ``V``; ``G``, ``BP``, ``RP``). Errors are
    propagated through the relation (inputs taken as independent) and the fit's scatter is added in quadrature.
    """
    t = TRANSFORMATIONS[system]
    if system == "johnson":
        b, v, eb, ev = mags["B"], mags["V"], errs["B"], errs["V"]
        colour = b - v
        g = v + 0.60 * colour - 0.12     # = 0.40 V + 0.60 B - 0.12
        r = v - 0.42 * colour + 0.11     # = 1.42 V - 0.42 B + 0.11
        g_var = (0.40 * ev) ** 2 + (0.60 * eb) ** 2
        r_var = (1.42 * ev) ** 2 + (0.42 * eb) ** 2
    elif system == "gaia":
        G, bp, rp = mags["G"], mags["BP"], mags["RP"]
        colour = bp - rp
        pg, dg = _poly(_GAIA_G_MINUS_G, colour)
        pr, dr = _poly(_GAIA_G_MINUS_R, colour)
        g, r = G - pg, G - pr
        colour_var = errs["BP"] ** 2 + errs["RP"] ** 2
        g_var = errs["G"] ** 2 + dg ** 2 * colour_var
        r_var = errs["G"] ** 2 + dr ** 2 * colour_var
    else:
        raise RefcatError(f"unknown photometric system {system!r}; known: sdss, {', '.join(TRANSFORMATIONS)}")
    lo, hi = t.colour_range
    inside = np.isfinite(colour) & (colour >= lo) & (colour <= hi)
    g_err = np.sqrt(g_var + t.scatter[0] ** 2)
    r_err = np.sqrt(r_var + t.scatter[1] ** 2)
    return g, r, g_err, r_err, inside


def gaia_server() -> str:
    """The Gaia archive to ask: ``$OPENASTRO_GAIA_SERVER`` (a mirror; a closed port in tests), else ESA's."""
    return os.environ.get(GAIA_SERVER_ENV) or GAIA_SERVER
