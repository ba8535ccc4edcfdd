"""Light curve per target x band from the calibrated per-exposure source tables.

Stage 6 of the pipeline map: find the target in every ``src`` table of its band, turn the instrumental-plus-
zero-point magnitude into a calibrated one (colour term with the target's catalogue colour), put every time
on one clock (BJD_TDB at the solar-system barycentre, seen from the frame's site), and flag outliers without
touching real variability or transits.

Calibrated magnitude. ``src["mag"]`` is ``-2.5 log10(flux / exptime) + zp`` with no colour term. The
photometric model (the simulator's and ``calibrate``'s) is ``m_inst = m_true + colour_term * (g - r) - zp``,
so ``m_cal = mag - colour_term * (g - r)``, with ``g - r`` from the reference catalogue row of the matched
star (``refcat_id``, else the nearest catalogue star within the match radius). Without a catalogue colour the
light curve keeps ``mag`` and says ``colour_source: none`` in its meta: a constant colour only shifts each
instrument's light curve by a constant, which relative photometry (flux relative to the median) absorbs only
when a single instrument is used, hence the warning.

Ensemble correction. A frame's own zero-point is fitted on a few catalogue stars and errs by ~0.01 mag on a
small camera, as much as a transit is deep. Every star of the frame shares that error, so the task fits
``m[frame, star] = M[star] + offset[frame]`` to all comparison stars of all frames of the band (Honeycutt's
ensemble photometry, ``ensemble.py``) and subtracts each frame's offset from the target: the per-frame
noise goes, the catalogue calibration (zero mean offset) stays, and instruments are tied through shared stars.

Times. ``meta["mjd_mid"]`` is UTC at mid-exposure; with the site's EarthLocation and the target's SkyCoord,
``BJD_TDB = (t.tdb + t.light_travel_time(target, "barycentric"))`` given as a Julian date (not MJD).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from ...astro.match import nearest_within
from ...pipeline.connections import Connections, Input, Output, PrerequisiteInput
from ...pipeline.task import NoWorkFound, PipelineTask, Resources, TaskConfig
from ...timescales import bjd_tdb  # noqa: F401 - part of this module's API
from .ensemble import solve_ensemble

if TYPE_CHECKING:
    from astropy.table import Table

TIME_SYSTEM = "BJD_TDB"
TIME_FORMAT = "jd"
REQUIRED_META = ("mjd_mid", "band", "instrument", "site_lat", "site_lon", "site_elev", "zp", "zp_err",
                 "colour_term")


def match_source(src: Table, ra: float, dec: float, radius_arcsec: float) -> int | None:
    """Row of ``src`` (a table with ``ra``, ``dec`` in degrees) nearest to (ra, dec) within the radius, or None.

    Great-circle distances (``astro.match``), so a target at RA 359.999 deg finds its star at RA 0.001 deg.
    """
    return nearest_within(src["ra"], src["dec"], ra, dec, radius_arcsec)


def catalogue_colour(refcat: Table | None, refcat_id: int | None, ra: float, dec: float,
                     radius_arcsec: float) -> float | None:
    """g - r of the target's reference-catalogue star: by id when the src row carries one, else by position."""
    if refcat is None or len(refcat) == 0 or not {"g", "r"} <= set(refcat.colnames):
        return None
    row = None
    if refcat_id is not None and refcat_id >= 0 and "id" in refcat.colnames:
        hit = np.flatnonzero(np.asarray(refcat["id"]) == refcat_id)
        row = int(hit[0]) if len(hit) else None
    if row is None:
        row = match_source(refcat, ra, dec, radius_arcsec)
    if row is None:
        return None
    colour = float(refcat["g"][row]) - float(refcat["r"][row])
    return colour if np.isfinite(colour) else None


def flag_outliers(time, mag, *, window_days: float, sigma: float, global_sigma: float,
                  min_neighbours: int = 2) -> np.ndarray:
    """Outliers against the median of their time neighbours; isolated points only against the whole.

    A point's residual is its distance from a robust line (Theil-Sen; the median with fewer than four) through
    the *other* unflagged points within ``window_days/2`` (the three nearest within a whole window at a
    session's first and last frames); it follows ingress/egress and pulsations slower than the window, so
    transits and pulsations are not flagged. The worst residual beyond ``sigma`` (MAD scale over all residuals) is
    flagged, its neighbours' residuals are recomputed without it, and so on (one at a time, as in a
    generalised ESD test, so an outlier does not take its neighbours down with it). Points with fewer than
    ``min_neighbours`` neighbours (single visits) are clipped only against the whole light curve at
    ``global_sigma`` (gross failures: a cosmic ray, a wrong match).
    """
    from astropy.stats import mad_std, sigma_clip

    t = np.asarray(time, dtype=float)
    m = np.asarray(mag, dtype=float)
    n = len(t)
    out = ~np.isfinite(m)
    if n == 0:
        return out
    order = np.argsort(t)
    ts, ms = t[order], m[order]
    lo = np.searchsorted(ts, ts - window_days / 2, side="left")
    hi = np.searchsorted(ts, ts + window_days / 2, side="right")
    usable = np.isfinite(ms)
    flagged = np.zeros(n, dtype=bool)

    lo2 = np.searchsorted(ts, ts - window_days, side="left")
    hi2 = np.searchsorted(ts, ts + window_days, side="right")

    def local_resid(k):
        idx = np.arange(lo[k], hi[k])
        idx = idx[(idx != k) & usable[idx]]
        if len(idx) < 3:  # a session's first or last frames: the three nearest within a whole window
            wide = np.arange(lo2[k], hi2[k])
            wide = wide[(wide != k) & usable[wide]]
            if len(wide) > len(idx):
                idx = wide[np.argsort(np.abs(ts[wide] - ts[k]), kind="stable")[:3]]
        if len(idx) < min_neighbours:
            return np.nan
        dt, mm = ts[idx] - ts[k], ms[idx]
        if len(idx) >= 4 and np.ptp(dt) > 0:
            # a robust local line (Theil-Sen) follows a steep rise and a session's first or last frame,
            # where the median of one-sided neighbours would lag the light curve
            i, j = np.triu_indices(len(idx), 1)
            ok = dt[j] != dt[i]
            if ok.any():
                slope = np.median((mm[j] - mm[i])[ok] / (dt[j] - dt[i])[ok])
                return ms[k] - np.median(mm - slope * dt)
        return ms[k] - np.median(mm)

    resid = np.array([local_resid(k) if usable[k] else np.nan for k in range(n)])
    for _ in range(n // 2):
        cand = np.isfinite(resid) & ~flagged
        if cand.sum() < 5:
            break
        centre, scale = np.median(resid[cand]), mad_std(resid[cand])
        if not scale > 0:
            break
        z = np.where(cand, np.abs(resid - centre) / scale, 0.0)
        k = int(np.argmax(z))
        if z[k] <= sigma:
            break
        flagged[k], usable[k] = True, False
        for j in range(lo2[k], hi2[k]):
            if not flagged[j] and np.isfinite(ms[j]):
                resid[j] = local_resid(j)
    good = np.isfinite(ms)
    if good.sum() >= 5:
        gclip = sigma_clip(ms[good], sigma=global_sigma, stdfunc="mad_std", maxiters=5)
        flagged[np.flatnonzero(good)[np.asarray(gclip.mask)]] = True
    out[order] |= flagged
    return out


@dataclass
class _Point:
    mjd: float
    mag: float
    mag_err: float
    mag_frame: float
    offset: float
    offset_err: float
    n_comparison: int
    instrument: str
    exposure: int
    site: str
    lat: float
    lon: float
    elev: float


def _site_label(meta) -> str:
    if meta.get("site"):
        return str(meta["site"])
    return f"{float(meta['site_lat']):+.3f},{float(meta['site_lon']):+.3f}"


def build_lightcurve(points: list[_Point], *, target: str, band: str, ra: float, dec: float,
                     window_days: float, sigma: float, global_sigma: float, colour: float | None) -> Table:
    """Sorted light-curve Table (schema of docs/datasets.md) from matched, calibrated points."""
    from astropy.table import Table

    points = sorted(points, key=lambda p: p.mjd)
    mjd = np.array([p.mjd for p in points])
    time = bjd_tdb(mjd, [p.lat for p in points], [p.lon for p in points], [p.elev for p in points], ra, dec)
    mag = np.array([p.mag for p in points])
    err = np.array([p.mag_err for p in points])
    offset_err = np.array([p.offset_err for p in points])
    outlier = flag_outliers(time, mag, window_days=window_days, sigma=sigma, global_sigma=global_sigma)
    ref = float(np.median(mag[~outlier])) if (~outlier).any() else float(np.nanmedian(mag))
    flux = 10 ** (-0.4 * (mag - ref))
    table = Table({
        "time": time, "mag": mag, "mag_err": err,
        "flux": flux, "flux_err": flux * err * np.log(10) / 2.5,
        "instrument": np.array([p.instrument for p in points], dtype=str),
        "exposure": np.array([p.exposure for p in points], dtype=np.int64),
        "site": np.array([p.site for p in points], dtype=str),
        "outlier": outlier,
        "mjd_utc": mjd,
        "mag_frame": np.array([p.mag_frame for p in points]),
        "ensemble_offset": np.array([p.offset for p in points]),
        "ensemble_offset_err": np.where(np.isfinite(offset_err), offset_err, np.nan),
        "n_comparison": np.array([p.n_comparison for p in points], dtype=np.int64),
    })
    table.meta.update({"target": target, "band": band, "ra": float(ra), "dec": float(dec),
                       "time_system": TIME_SYSTEM, "time_format": TIME_FORMAT, "flux_reference_mag": ref,
                       "colour_gr": colour, "colour_source": "refcat" if colour is not None else "none",
                       "n_outliers": int(outlier.sum()),
                       "ensemble": bool(np.any(np.array([p.n_comparison for p in points]) > 0))})
    return table


def _colour_lookup(refcat: Table | None) -> dict:
    """refcat id -> g - r, for colour-correcting comparison stars."""
    if refcat is None or len(refcat) == 0 or not {"id", "g", "r"} <= set(refcat.colnames):
        return {}
    gr = np.asarray(refcat["g"], float) - np.asarray(refcat["r"], float)
    return {int(i): float(c) for i, c in zip(refcat["id"], gr, strict=True) if np.isfinite(c)}


def _flag_bits(meta, names) -> int:
    bits = meta.get("flags") if isinstance(meta.get("flags"), dict) else {}
    return int(sum(int(bits[n]) for n in names if n in bits))


def comparison_measurements(table: Table, exclude_row: int | None, colours: dict, *, reject_flags: list[str],
                            apply_colour_term: bool):
    """(refcat ids, magnitudes, errors) of the frame's catalogue-matched stars other than the target."""
    if len(table) == 0 or "refcat_id" not in table.colnames:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    rid = np.asarray(table["refcat_id"], dtype=np.int64)
    ok = rid >= 0
    bits = _flag_bits(table.meta, reject_flags)
    if bits and "flags" in table.colnames:
        ok &= (np.asarray(table["flags"], dtype=np.int64) & bits) == 0
    if exclude_row is not None:
        ok[exclude_row] = False
    mag = np.asarray(table["mag"], dtype=float)[ok]
    err = np.asarray(table["mag_err"], dtype=float)[ok]
    rid = rid[ok]
    if apply_colour_term:
        colour = np.array([colours.get(int(i), np.nan) for i in rid])
        mag = mag - float(table.meta["colour_term"]) * colour  # stars without a colour drop out (NaN)
    return rid, mag, err


class LightcurveConfig(TaskConfig):
    match_radius_arcsec: float = Field(2.0, gt=0, description="Largest src-to-target distance accepted as the target.")
    outlier_window_days: float = Field(0.05, gt=0, description="Time window of the neighbours a point is compared with (shorter than ingress+egress and variability).")
    outlier_sigma: float = Field(5.0, gt=0, description="Clip threshold (MAD sigmas) for residuals from the local median.")
    global_outlier_sigma: float = Field(6.0, gt=0, description="Clip threshold (MAD sigmas) of the whole light curve, for isolated points.")
    reject_flags: int = Field(0, ge=0, description="src rows with (flags & reject_flags) != 0 are left out (0: keep all).")
    apply_colour_term: bool = Field(True, description="m_cal = mag - colour_term * (g - r)_refcat; off: keep src mag as is.")
    add_zp_err: bool = Field(False, description="Add the frame's zp_err to mag_err in quadrature. Off by default: zp_err is "
                             "mostly the catalogue error of the pointing's comparison stars, common to all its frames.")
    min_points: int = Field(3, ge=1, description="Fewer matched points than this: NoWorkFound.")
    ensemble: bool = Field(True, description="Correct each frame by the ensemble offset of the field's other catalogue stars "
                           "(differential photometry); off: the frame's own zero-point only.")
    ensemble_min_stars: int = Field(2, ge=1, description="Comparison stars a frame needs for an ensemble offset (else left uncorrected).")
    ensemble_clip_sigma: float = Field(4.0, gt=0, description="Comparison measurements beyond this many sigma are left out.")
    ensemble_reject_flags: list[str] = Field(["SATURATED", "EDGE", "MASKED", "BAD_FLUX", "BLENDED", "REF_CROWDED",
                                              "REF_VARIABLE"],
                                             description="src flags (by name, from the table's meta) that keep a star out of the ensemble.")


class LightcurveConnections(Connections):
    src = Input("src", ("instrument", "exposure"), "Table", multiple=True,
                doc="Calibrated source tables of the target's field in this band.")
    refcat = PrerequisiteInput("refcat", ("field",), "Table", doc="Reference catalogue (the target's g - r).")
    lightcurve = Output("lightcurve", ("target", "band"), "Table", doc="Time-ordered calibrated photometry.")


class LightcurveTask(PipelineTask):
    """Gather the target's photometry of one band into a BJD_TDB light curve with outliers flagged."""

    dimensions = ("target", "band")
    Config = LightcurveConfig
    Connections = LightcurveConnections
    resources = Resources(cores=1, memory_mb=1024, walltime_min=10)

    def run(self, src, refcat=None, records=None, data_ids=None, data_id=None):
        cfg = self.config
        target = dict((records or {}).get("target") or {})
        name = target.get("name") or (data_id or {}).get("target") or "target"
        band = (data_id or {}).get("band")
        if target.get("ra") is None or target.get("dec") is None:
            raise ValueError(f"lightcurve {data_id}: the target record has no ra/dec (records={records!r})")
        ra, dec = float(target["ra"]), float(target["dec"])
        ids = (data_ids or {}).get("src") or [{} for _ in src]
        colours = _colour_lookup(refcat) if cfg.apply_colour_term else {}
        frames, hits, colour, colour_id = [], [], None, None
        for table, did in zip(src, ids, strict=True):
            meta = table.meta
            missing = [k for k in REQUIRED_META if k not in meta]
            if missing:
                raise ValueError(f"src {did or meta.get('exposure')}: meta lacks {missing}")
            if band is not None and str(meta["band"]) != str(band):
                continue
            band = band or str(meta["band"])
            i = match_source(table, ra, dec, cfg.match_radius_arcsec)
            frames.append((table, did, i))
            if i is None:
                continue
            row = table[i]
            if cfg.reject_flags and "flags" in table.colnames and int(row["flags"]) & cfg.reject_flags:
                continue
            mag, err = float(row["mag"]), float(row["mag_err"])
            if not (np.isfinite(mag) and np.isfinite(err)):
                continue
            rid = int(row["refcat_id"]) if "refcat_id" in table.colnames else None
            if cfg.apply_colour_term and (colour is None or rid != colour_id):
                c = catalogue_colour(refcat, rid, ra, dec, cfg.match_radius_arcsec)
                if c is not None:
                    colour, colour_id = c, rid
            hits.append((len(frames) - 1, mag, err))
        offsets = self._ensemble(frames, colours, colour_id) if cfg.ensemble else None
        points = []
        for k, mag, err in hits:
            table, did, _ = frames[k]
            meta = table.meta
            if cfg.apply_colour_term and colour is not None:
                mag -= float(meta["colour_term"]) * colour
            off, off_err, n_comp = (float(offsets.offset[k]), float(offsets.offset_err[k]), int(offsets.n_stars[k])) \
                if offsets is not None else (0.0, np.inf, 0)
            corrected = np.isfinite(off_err)
            mag_err = float(np.hypot(err, off_err)) if corrected else err
            if cfg.add_zp_err and not corrected:
                mag_err = float(np.hypot(mag_err, float(meta["zp_err"])))
            points.append(_Point(
                mjd=float(meta["mjd_mid"]), mag=mag - off if corrected else mag, mag_err=mag_err, mag_frame=mag,
                offset=off if corrected else 0.0, offset_err=off_err, n_comparison=n_comp if corrected else 0,
                instrument=str(meta["instrument"]), exposure=int(did.get("exposure", meta.get("exposure", -1))),
                site=_site_label(meta), lat=float(meta["site_lat"]), lon=float(meta["site_lon"]),
                elev=float(meta["site_elev"])))
        if len(points) < cfg.min_points:
            raise NoWorkFound(f"target {name} band {band}: found in {len(points)} of {len(src)} src tables "
                              f"(need {cfg.min_points})")
        if cfg.apply_colour_term and colour is None and len({p.instrument for p in points}) > 1:
            self.log.warning("target %s: no catalogue colour; colour terms not applied across %d instruments",
                             name, len({p.instrument for p in points}))
        lc = build_lightcurve(points, target=name, band=str(band), ra=ra, dec=dec,
                              window_days=cfg.outlier_window_days, sigma=cfg.outlier_sigma,
                              global_sigma=cfg.global_outlier_sigma,
                              colour=colour if cfg.apply_colour_term else None)
        self.log.info("target %s band %s: %d points from %d src tables, %d outliers, %d ensemble-corrected "
                      "(median offset error %.4f mag)", name, band, len(lc), len(src), lc.meta["n_outliers"],
                      int(np.sum(lc["n_comparison"] > 0)), float(np.nanmedian(lc["ensemble_offset_err"]))
                      if np.isfinite(lc["ensemble_offset_err"]).any() else float("nan"))
        return {"lightcurve": lc}

    def _ensemble(self, frames, colours, target_refcat_id):
        """Per-frame offsets from every other catalogue star of the band's frames (see the module docstring)."""
        cfg = self.config
        fr, ids, mags, errs = [], [], [], []
        for k, (table, _, row) in enumerate(frames):
            rid, mag, err = comparison_measurements(table, row, colours, reject_flags=cfg.ensemble_reject_flags,
                                                    apply_colour_term=cfg.apply_colour_term)
            if target_refcat_id is not None:
                keep = rid != target_refcat_id
                rid, mag, err = rid[keep], mag[keep], err[keep]
            fr.append(np.full(len(rid), k))
            ids.append(rid)
            mags.append(mag)
            errs.append(err)
        if not frames or not sum(len(r) for r in ids):
            return None
        return solve_ensemble(np.concatenate(fr), np.concatenate(ids), np.concatenate(mags), np.concatenate(errs),
                              len(frames), clip_sigma=cfg.ensemble_clip_sigma, min_stars=cfg.ensemble_min_stars)
