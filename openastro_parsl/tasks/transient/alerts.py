"""Alerts: confident, unknown, brightening point sources of one exposure, as JSON records with cutout PNGs.

A candidate becomes an alert when the CNN calls it real (score above the threshold), it brightened (a
positive difference), it is significant, its footprint is clean (not on the frame edge or outside the
template), and nothing known sits there: no reference-catalogue source and no listed known variable within
the match radius (the larger of a fixed radius and a multiple of the seeing, since a residual of a catalogued
star can be offset by up to about a FWHM), and no known minor planet predicted there at the frame's
mid-exposure time (from the repository's ``mpcorb`` orbit file, when the inputs hold one: docs/vetting.md).

Every alert carries a ``vetting`` block saying what it was checked against and what was nearest; a candidate
that is a known minor planet is listed under ``known_ssobjects`` (designation, predicted offset), not alerted.
Without an orbit file the alerts are marked ``unvetted`` for minor planets, with a note naming the command.
With the field's ``knownSources`` (catalogued galaxies, variables, quasars: ``ingest-known-sources``), a
candidate on a catalogued variable or quasar is not alerted and one inside a catalogued galaxy is alerted with
a ``host_galaxy`` flag and its offset from the nucleus (a supernova candidate is exactly that). A candidate
within the halo/spike radius of a bright reference-catalogue star (growing with its flux), or on one of its
ghosts (configured per instrument), is not alerted (``bright_star``, listed under ``near_bright_stars``).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ...astro.jsonable import finite_or_none
from ...astro.match import nearest
from ...astro.minor_planets import SsMatch, match_minor_planets
from ...pipeline.connections import Connections, Input, Output, PrerequisiteInput
from ...pipeline.task import PipelineTask, Resources, TaskConfig
from .brightstars import BrightStarMatch, match_bright_stars
from .diffim import FLAGS

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["KnownSource", "ORBITS_HINT", "select_alerts", "alert_figure", "AlertsTask", "ssobject_vetting"]

# What an alert without catalogued-source vetting tells the user to run.
KNOWN_HINT = ("`openastro-butler fetch-known-sources REPO --field FIELD --catalog simbad` (or --catalog ned) on a "
              "machine with a network, or `openastro-butler ingest-known-sources REPO FILE --field FIELD`")
# What an alert without minor-planet vetting tells the user to run (also the prerequisite's hint).
ORBITS_HINT = ("add a minor-planet orbit file with `openastro-butler ingest-orbits {repo} MPCORB.DAT[.gz]` "
               "(or `openastro-butler fetch-orbits {repo} --field FIELD` on a machine with a network)")


class KnownSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="Name reported when a candidate matches it.")
    ra: float = Field(description="Right ascension (deg).")
    dec: float = Field(description="Declination (deg).")


class AlertsConfig(TaskConfig):
    rb_threshold: float = Field(0.8, ge=0, le=1, description="Least real/bogus score of an alert.")
    snr_min: float = Field(5.0, gt=0, description="Least PSF-fit S/N of an alert.")
    positive_only: bool = Field(True, description="Only brightenings (negative differences are fading sources).")
    match_radius_arcsec: float = Field(2.0, gt=0, description="A catalogue/known source closer than this is a match.")
    match_radius_fwhm: float = Field(1.5, ge=0, description="... or closer than this many PSF FWHMs, if larger.")
    reject_flags: int = Field(FLAGS["EDGE"] | FLAGS["NO_DATA"] | FLAGS["SAT"] | FLAGS["BAD"],
                              description="diaSrc flag bits (diffim.FLAGS) that disqualify a candidate.")
    known_variables: list[KnownSource] = Field(default_factory=list,
                                               description="Known variables / transients never to alert on.")
    max_stamps: int = Field(25, ge=1, description="Most alerts drawn in the alertStamps PNG (highest score first).")
    ssobject_radius_arcsec: float = Field(
        20.0, gt=0, description="A candidate this close to a predicted minor planet is that body; it must cover the "
                                "two-body prediction error (arcseconds to tens of arcseconds, docs/vetting.md).")
    ssobject_mag_limit: float | None = Field(
        22.0, description="Minor planets predicted fainter than this V are not matched (None: all of them).")
    reject_known_kinds: list[str] = Field(["variable", "qso"], description="knownSources kinds that keep a "
                                          "candidate within the match radius from alerting.")
    flag_host_galaxies: bool = Field(True, description="Flag alerts inside a knownSources galaxy (its radius).")
    known_source_catalogs: list[str] | None = Field(
        None, description="knownSources catalogues to vet against (ned, simbad, file; None: every one registered).")
    known_source_radius_arcsec: float | None = Field(
        None, gt=0, description="Match radius for reject_known_kinds (None: the refcat match radius).")
    bright_star_mag_limit: float | None = Field(
        12.0, description="Refcat stars brighter than this (bright_star_band) veto candidates in their halo and "
                          "spikes (None: no bright-star check).")
    bright_star_band: str = Field("r", description="Refcat magnitude column the bright-star check reads.")
    bright_star_radius_arcsec: float = Field(
        6.0, gt=0, description="Veto radius around a star at bright_star_mag_limit; x1.58 per magnitude brighter "
                               "(sqrt of the flux).")
    bright_star_max_radius_arcsec: float = Field(300.0, gt=0, description="Largest veto radius of any star.")
    ghost_axis_pix: tuple[float, float] | None = Field(
        None, description="Optical axis (x, y pixels) ghosts are reflected through (None: no ghost check).")
    ghost_factors: list[float] = Field(default_factory=list, description="Ghost positions: axis + factor x (star - "
                                       "axis), one factor per ghost (-1: the reflection through the axis).")
    ghost_mag_limit: float | None = Field(None, description="Stars brighter than this make ghosts (None: "
                                          "bright_star_mag_limit).")
    ghost_radius_pix: float = Field(5.0, gt=0, description="A candidate this close to a ghost position is the ghost.")


def ssobject_vetting(scored: Table, orbits: Table | None, config: AlertsConfig) -> SsMatch | None:
    """The frame's candidates matched to the minor planets of ``orbits`` at its mid-exposure time (None: no
    orbit file, or no usable time)."""
    mjd = float(scored.meta.get("mjd_mid", np.nan))
    if orbits is None or not np.isfinite(mjd):
        return None
    meta = scored.meta
    site = ((float(meta["site_lon"]), float(meta["site_lat"]), float(meta.get("site_elev", 0.0) or 0.0))
            if meta.get("site_lon") is not None and meta.get("site_lat") is not None else None)
    return match_minor_planets(orbits, mjd, np.asarray(scored["ra"], float), np.asarray(scored["dec"], float),
                               config.ssobject_radius_arcsec, site=site, mag_limit=config.ssobject_mag_limit)


def bright_star_vetting(scored: Table, refcat: Table | None, config: AlertsConfig) -> BrightStarMatch | None:
    """The frame's candidates that are residuals or ghosts of bright refcat stars (None: check off or impossible)."""
    if config.bright_star_mag_limit is None or refcat is None or config.bright_star_band not in refcat.colnames:
        return None
    return match_bright_stars(scored, refcat, config.bright_star_band, config.bright_star_mag_limit,
                              config.bright_star_radius_arcsec, config.bright_star_max_radius_arcsec,
                              config.ghost_axis_pix, tuple(config.ghost_factors), config.ghost_mag_limit,
                              config.ghost_radius_pix)


def _known_sources(scored: Table, known: Table | None, radius: float, config: AlertsConfig):
    """Per candidate: the nearest catalogued source (index, separation "), whether it is a rejected kind within
    the match radius, and the galaxy it lies in (index, -1 if none)."""
    n = len(scored)
    if config.known_source_radius_arcsec is not None:
        radius = config.known_source_radius_arcsec
    if known is None or len(known) == 0:
        return np.full(n, -1), np.full(n, np.inf), np.zeros(n, bool), np.full(n, -1)
    from ...astro.match import angular_separation

    sep = angular_separation(np.asarray(scored["ra"], float)[:, None], np.asarray(scored["dec"], float)[:, None],
                             np.asarray(known["ra"], float)[None, :], np.asarray(known["dec"], float)[None, :]) * 3600
    idx = np.argmin(sep, axis=1)
    near = sep[np.arange(n), idx]
    kinds = np.asarray(known["kind"]).astype(str)
    rejected = np.any((sep <= radius) & np.isin(kinds, config.reject_known_kinds)[None, :], axis=1)
    inside = np.where((kinds == "galaxy")[None, :] & (sep <= np.asarray(known["radius_arcsec"], float)[None, :]),
                      sep, np.inf)
    host = np.where(np.isfinite(inside.min(axis=1)), np.argmin(inside, axis=1), -1) if config.flag_host_galaxies \
        else np.full(n, -1)
    return idx, near, rejected, host


def select_alerts(scored: Table, refcat: Table | None, config: AlertsConfig,
                  ss: SsMatch | None = None, known: Table | None = None,
                  bright: BrightStarMatch | None = None) -> tuple[np.ndarray, dict]:
    """Boolean mask of the alerting rows and, per row, why each other one was not (for the summary)."""
    n = len(scored)
    if n == 0:
        return np.zeros(0, bool), {}
    meta = scored.meta
    fwhm_arcsec = float(meta.get("psf_fwhm", 0.0) or 0.0) * float(meta.get("pixel_scale_arcsec", 0.0) or 0.0)
    radius = max(config.match_radius_arcsec, config.match_radius_fwhm * fwhm_arcsec)
    rb = np.asarray(scored["rb_score"], float)
    snr = np.asarray(scored["snr"], float)
    flux = np.asarray(scored["flux"], float)
    flags = np.asarray(scored["flags"], int) if "flags" in scored.colnames else np.zeros(n, int)
    cat_idx, cat_sep = (nearest(scored["ra"], scored["dec"], refcat["ra"], refcat["dec"]) if refcat is not None
                        else (np.full(n, -1), np.full(n, np.inf)))
    kv = config.known_variables
    kv_idx, kv_sep = nearest(scored["ra"], scored["dec"], [k.ra for k in kv], [k.dec for k in kv])
    reasons = {
        "low_score": rb < config.rb_threshold,
        "low_snr": np.abs(snr) < config.snr_min,
        "fading": (flux <= 0) if config.positive_only else np.zeros(n, bool),
        "flagged": (flags & config.reject_flags) != 0,
        "catalogued": cat_sep <= radius,
        "known_variable": kv_sep <= radius,
        "known_ssobject": ss.matched if ss is not None else np.zeros(n, bool),
        "bright_star": bright.flagged if bright is not None else np.zeros(n, bool),
    }
    ks_idx, ks_sep, ks_rejected, host = _known_sources(scored, known, radius, config)
    if known is not None:
        reasons["catalogued_source"] = ks_rejected
    ok = ~np.logical_or.reduce(list(reasons.values()))
    # the candidates that only vetting against minor planets kept from alerting
    # (a body near a bright star is still that body: it is listed here, its vetting block names the star)
    only_ss = reasons["known_ssobject"] & ~np.logical_or.reduce(
        [v for k, v in reasons.items() if k not in ("known_ssobject", "bright_star")])
    # ... and those that only the bright-star check did (minor planets aside: a body is named, not vetoed)
    only_bright = reasons["bright_star"] & ~np.logical_or.reduce(
        [v for k, v in reasons.items() if k not in ("bright_star", "known_ssobject")]) & ~reasons["known_ssobject"]
    extra = {"radius_arcsec": radius, "cat_idx": cat_idx, "cat_sep": cat_sep, "kv_idx": kv_idx, "kv_sep": kv_sep,
             "only_ssobject": only_ss, "only_bright": only_bright, "ks_idx": ks_idx, "ks_sep": ks_sep, "host": host}
    return ok, {"reasons": {k: int(v.sum()) for k, v in reasons.items()}, **extra}


def alert_figure(cutouts: dict, rows: list[int], titles: list[str], empty_text: str = "no alerts"):
    """PNG bytes: one row per alert, science / reference / difference stamps (asinh stretch, shared per row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        fig, ax = plt.subplots(figsize=(4, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, empty_text, ha="center", va="center")
    else:
        fig, axes = plt.subplots(len(rows), 3, figsize=(6.6, 2.3 * len(rows)), squeeze=False)
        for r, (i, title) in enumerate(zip(rows, titles, strict=True)):
            sig = np.asarray(cutouts["sigma"][i], float)
            h = sig.shape[0] // 2
            s = float(np.median(sig[max(h - 2, 0):h + 3, max(h - 2, 0):h + 3])) or 1.0
            for c, key in enumerate(("science", "reference", "difference")):
                ax = axes[r, c]
                ax.imshow(np.arcsinh(np.asarray(cutouts[key][i], float) / (3 * s)), origin="lower", cmap="gray",
                          vmin=-2, vmax=6 if key != "difference" else 4)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(key, fontsize=9)
            axes[r, 0].set_ylabel(title, fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


class AlertsConnections(Connections):
    scored = Input("diaSrcScored", ("instrument", "exposure"), "Table", doc="Candidates with rb_score.")
    cutouts = Input("diaCutouts", ("instrument", "exposure"), "NumpyArrays", doc="Their stamps.")
    refcat = PrerequisiteInput("refcat", ("field",), "Table", doc="The field's reference catalogue.")
    known = PrerequisiteInput("knownSources", ("field",), "Table", optional=True,
                              doc="Catalogued galaxies, variables, quasars of the field (ingest-known-sources).")
    orbits = PrerequisiteInput("mpcorb", (), "Table", optional=True, hint=ORBITS_HINT,
                               doc="Minor-planet orbits (openastro-butler ingest-orbits); without them alerts are "
                                   "marked unvetted for minor planets.")
    alerts = Output("alerts", ("instrument", "exposure"), "StructuredData", doc="Alert records (JSON).")
    stamps = Output("alertStamps", ("instrument", "exposure"), "Plot", doc="Cutouts of the alerts (PNG).")


class AlertsTask(PipelineTask):
    """Alert records for the confident, uncatalogued brightenings of one exposure, and their cutouts."""

    dimensions = ("instrument", "exposure")
    Config = AlertsConfig
    Connections = AlertsConnections
    resources = Resources(cores=1, memory_mb=512, walltime_min=5)

    def run(self, scored, cutouts, refcat, orbits=None, known=None, data_id=None):
        c = self.config
        did = dict(data_id) if data_id else {}
        where = ", ".join(f"{k}={v}" for k, v in did.items()) or "diaSrcScored"
        if "rb_score" not in scored.colnames:
            raise ValueError(f"{where}: diaSrcScored has no rb_score column (run rbClassify first)")
        orbit_table = _orbit_table(orbits, where)
        ss = ssobject_vetting(scored, orbit_table, c) if len(scored) else None
        known_table = _known_table(known, c)
        bright = bright_star_vetting(scored, refcat, c) if len(scored) else None
        ok, info = select_alerts(scored, refcat, c, ss, known_table, bright)
        info["bright"] = bright
        meta = scored.meta
        instrument = str(did.get("instrument", meta.get("instrument", "")))
        exposure = int(did.get("exposure", meta.get("exposure", -1)))
        ids = np.asarray(cutouts.get("id", np.arange(len(scored))))
        row_of = {int(v): k for k, v in enumerate(ids)}
        ss_summary = _ss_summary(ss, orbit_table, meta, where, c)
        alerts = []
        order = np.flatnonzero(ok)[np.argsort(-np.asarray(scored["rb_score"])[ok])] if len(scored) else []
        for rank, i in enumerate(order):
            rec = self._record(scored, int(i), refcat, known_table, info, ss, ss_summary, instrument, exposure)
            rec.update({"stamp_row": rank if rank < c.max_stamps else None, "cutout_index": row_of.get(rec["candidate_id"])})
            alerts.append(rec)
        known_sso = [self._record(scored, int(i), refcat, known_table, info, ss, ss_summary, instrument, exposure)
                     for i in np.flatnonzero(info.get("only_ssobject", np.zeros(0, bool)))]
        near_bright = [self._record(scored, int(i), refcat, known_table, info, ss, ss_summary, instrument, exposure)
                       for i in np.flatnonzero(info.get("only_bright", np.zeros(0, bool)))]
        shown = alerts[:c.max_stamps]
        png = alert_figure(cutouts, [a["cutout_index"] for a in shown],
                           [f"{a['alert_id']}\nm={a['mag']:.2f} rb={a['rb_score']:.2f}" if a["mag"] is not None
                            else a["alert_id"] for a in shown], empty_text=f"no alerts: {where}")
        summary = {
            "instrument": instrument, "exposure": exposure, "band": str(meta.get("band", "")),
            "mjd": finite_or_none(meta.get("mjd_mid")),
            "n_candidates": int(len(scored)), "n_real": int(np.sum(np.asarray(scored["rb_score"]) >= c.rb_threshold))
            if len(scored) else 0, "n_alerts": len(alerts), "rejected": info.get("reasons", {}),
            "criteria": {"rb_threshold": c.rb_threshold, "snr_min": c.snr_min, "positive_only": c.positive_only,
                         "match_radius_arcsec": float(info.get("radius_arcsec", c.match_radius_arcsec)),
                         "reject_flags": c.reject_flags, "ssobject_radius_arcsec": c.ssobject_radius_arcsec,
                         "ssobject_mag_limit": c.ssobject_mag_limit,
                         "bright_star_mag_limit": c.bright_star_mag_limit,
                         "bright_star_radius_arcsec": c.bright_star_radius_arcsec,
                         "ghost_factors": list(c.ghost_factors)},
            "rb_version": meta.get("rb_version"), "ssobject_vetting": ss_summary, "alerts": alerts,
            "known_ssobjects": known_sso, "near_bright_stars": near_bright,
            "catalogued_sources_vetting": ks_summary(known_table, c),
        }
        self.log.info("%s: %d candidates, %d scored real, %d alerts, %d known minor planet(s)%s", where,
                      summary["n_candidates"], summary["n_real"], len(alerts), len(known_sso),
                      "" if ss_summary["status"] == "vetted" else f" (minor planets unvetted: {ss_summary['note']})")
        return {"alerts": summary, "stamps": png}

    def _record(self, scored, i, refcat, known, info, ss, ss_summary, instrument, exposure) -> dict:
        """One candidate as an alert record, with its vetting block."""
        c = self.config
        r = scored[i]
        meta = scored.meta
        cid = int(r["id"]) if "id" in scored.colnames else i
        ci = info["cat_idx"][i]
        radius = float(info["radius_arcsec"])
        nearest_ref = None
        if ci >= 0 and refcat is not None and len(refcat):
            nearest_ref = {"id": int(refcat["id"][ci]), "sep_arcsec": float(info["cat_sep"][i]),
                           "r": float(refcat["r"][ci]) if "r" in refcat.colnames else None}
        kv = c.known_variables
        ki = int(info["kv_idx"][i])
        vetting = {
            "refcat": {"decision": "catalogued" if nearest_ref and nearest_ref["sep_arcsec"] <= radius else "clear",
                       "radius_arcsec": radius, "nearest": nearest_ref},
            "known_variables": {"decision": "known_variable" if info["kv_sep"][i] <= radius else "clear",
                                "nearest": {"name": kv[ki].name, "sep_arcsec": float(info["kv_sep"][i])}
                                if ki >= 0 and kv else None},
            "ssobject": _ss_vetting(ss, i, r, ss_summary),
            "catalogued_sources": _ks_vetting(known, info, i, r, c.known_source_radius_arcsec or radius, c),
            "bright_star": _bright_vetting(info.get("bright"), refcat, i, r, c),
        }
        return {
            "alert_id": f"{instrument}-{exposure}-{cid}", "instrument": instrument, "exposure": exposure,
            "band": str(meta.get("band", "")), "mjd": float(meta.get("mjd_mid", np.nan)),
            "candidate_id": cid, "ra": float(r["ra"]), "dec": float(r["dec"]),
            "x": float(r["x"]), "y": float(r["y"]), "flux": float(r["flux"]),
            "flux_err": float(r["flux_err"]), "snr": float(r["snr"]),
            "mag": finite_or_none(r["mag"]), "mag_err": finite_or_none(r["mag_err"]),
            "rb_score": float(r["rb_score"]), "fwhm_pix": float(r["fwhm"]), "flags": int(r["flags"]),
            "nearest_refcat": nearest_ref, "host_galaxy": vetting["catalogued_sources"].get("host_galaxy"),
            "bright_star": vetting["bright_star"].get("star"),
            "vetting": vetting,
        }


def ks_summary(known: Table | None, c: AlertsConfig) -> dict:
    """The frame's vetting against catalogued sources: vetted (which catalogues, how many sources) or why not.

    Without knownSources it is ``unvetted`` when the pipeline names catalogues (known_source_catalogs), else
    ``not_configured``; a named catalogue the dataset lacks is listed under ``missing``."""
    if known is None:
        return {"status": "unvetted" if c.known_source_catalogs else "not_configured",
                "note": "no knownSources for this field: " + KNOWN_HINT}
    present = sorted(set(np.asarray(known.meta.get("all_catalogs", known["catalog"] if "catalog" in known.colnames
                                                   else ["file"] * len(known))).astype(str)))
    missing = sorted(set(c.known_source_catalogs or []) - set(present))
    out = {"status": "vetted", "catalogs": present if c.known_source_catalogs is None
           else sorted(set(c.known_source_catalogs) & set(present)), "n_sources": len(known)}
    if missing:
        out.update({"missing": missing, "note": f"no {', '.join(missing)} sources registered: " + KNOWN_HINT})
    return out


def _ks_vetting(known: Table | None, info: dict, i: int, row, radius: float, c: AlertsConfig) -> dict:
    """One candidate against the field's catalogued sources: the nearest, and the decision."""
    if known is None:
        head = ks_summary(None, c)
        return {"status": head["status"], "decision": "unvetted" if head["status"] == "unvetted" else "clear",
                "note": head["note"]}
    out: dict = {"status": "vetted", "radius_arcsec": radius, "decision": "clear", "nearest": None}
    k = int(info["ks_idx"][i])
    if k >= 0:
        out["nearest"] = {"name": str(known["name"][k]), "kind": str(known["kind"][k]),
                          "sep_arcsec": float(info["ks_sep"][i])}
        if out["nearest"]["kind"] in c.reject_known_kinds and info["ks_sep"][i] <= radius:
            out["decision"] = f"catalogued_{out['nearest']['kind']}"
    h = int(info["host"][i])
    if h >= 0:
        dec0 = np.deg2rad(float(known["dec"][h]))
        east = ((float(row["ra"]) - float(known["ra"][h]) + 180.0) % 360.0 - 180.0) * np.cos(dec0) * 3600.0
        north = (float(row["dec"]) - float(known["dec"][h])) * 3600.0
        out["host_galaxy"] = {"name": str(known["name"][h]), "offset_arcsec": {"east": float(east),
                              "north": float(north)}, "sep_arcsec": float(np.hypot(east, north)),
                              "radius_arcsec": float(known["radius_arcsec"][h])}
        if out["decision"] == "clear":
            out["decision"] = "host_galaxy"
    return out


def _bright_vetting(bright: BrightStarMatch | None, refcat: Table | None, i: int, row, c: AlertsConfig) -> dict:
    """One candidate against the bright stars: the star whose halo/spikes or ghost it is on, or clear."""
    if bright is None:
        why = ("bright_star_mag_limit is None" if c.bright_star_mag_limit is None else "no refcat" if refcat is None
               else f"the refcat has no {c.bright_star_band!r} column")
        return {"status": "not_configured", "decision": "clear", "note": why}
    out: dict = {"status": "vetted", "decision": "clear", "n_bright": bright.n_bright, "notes": bright.notes}
    assert refcat is not None
    k = int(bright.star[i])
    if k >= 0:
        dec0 = np.deg2rad(float(refcat["dec"][k]))
        east = ((float(row["ra"]) - float(refcat["ra"][k]) + 180.0) % 360.0 - 180.0) * np.cos(dec0) * 3600.0
        north = (float(row["dec"]) - float(refcat["dec"][k])) * 3600.0
        out["decision"] = "bright_star"
        out["star"] = {"id": int(refcat["id"][k]), "mag": float(refcat[c.bright_star_band][k]),
                       "band": c.bright_star_band, "sep_arcsec": float(bright.star_sep[i]),
                       "radius_arcsec": float(bright.star_radius[i]),
                       "offset_arcsec": {"east": float(east), "north": float(north)}}
    g = int(bright.ghost[i])
    if g >= 0:
        out["decision"] = "bright_star"
        out["ghost"] = {"id": int(refcat["id"][g]), "mag": float(refcat[c.bright_star_band][g]),
                        "factor": float(bright.ghost_factor[i]), "sep_pix": float(bright.ghost_sep_pix[i]),
                        "x": float(bright.ghost_xy[i, 0]), "y": float(bright.ghost_xy[i, 1])}
        out.setdefault("star", {"id": out["ghost"]["id"], "mag": out["ghost"]["mag"], "band": c.bright_star_band,
                                "ghost": True})
    return out


def _known_table(known, c: AlertsConfig) -> Table | None:
    """The field's knownSources (None if none), cut to the configured catalogues (a file's rows are 'file')."""
    from astropy.table import Table

    table = (known if isinstance(known, Table) else known[0]) if known else None
    if table is None or c.known_source_catalogs is None:
        return table
    cats = np.asarray(table["catalog"]).astype(str) if "catalog" in table.colnames else np.full(len(table), "file")
    out = table[np.isin(cats, c.known_source_catalogs)]
    out.meta["all_catalogs"] = sorted(set(cats))
    return out


def _orbit_table(orbits, where: str) -> Table | None:
    """The orbit datasets the quantum was given as one table (None when there are none)."""
    from astropy.table import Table, vstack

    from ...astro.mpcorb import validate_orbits

    if orbits is None:
        return None
    tables = [orbits] if isinstance(orbits, Table) else list(orbits)
    if not tables:
        return None
    t = tables[0] if len(tables) == 1 else vstack(tables, metadata_conflicts="silent")
    return validate_orbits(t, f"{where}: mpcorb")


def _ss_summary(ss: SsMatch | None, orbits: Table | None, meta, where: str, c: AlertsConfig) -> dict:
    """The frame's minor-planet vetting: vetted (how many orbits, which bodies were predicted nearby) or why not."""
    if ss is None:
        if orbits is None:
            note = "no minor-planet orbit file in the inputs: " + ORBITS_HINT.replace("{repo}", "REPO")
        elif not np.isfinite(float(meta.get("mjd_mid", np.nan))):
            note = f"{where}: no mid-exposure time (MJD-MID) to predict minor planets at"
        else:
            note = "no candidates to vet"
        return {"status": "unvetted" if note != "no candidates to vet" else "vetted", "note": note,
                "n_orbits": 0 if orbits is None else len(orbits)}
    p = ss.predicted
    return {"status": "vetted", "n_orbits": ss.n_orbits, "radius_arcsec": ss.radius_arcsec,
            "topocentric": ss.topocentric, "notes": ss.notes,
            "source": None if orbits is None else orbits.meta.get("source"),
            "predicted": [{"designation": str(p.designation[j]), "ra": float(p.ra[j]), "dec": float(p.dec[j]),
                           "mag_v": float(p.mag_v[j]), "rate_arcsec_per_hour": float(p.rate_arcsec_per_hour[j])}
                          for j in np.argsort(p.mag_v)[:50]]}


def _ss_vetting(ss: SsMatch | None, i: int, row, ss_summary: dict) -> dict:
    """One candidate's minor-planet decision: known_ssobject (designation, predicted offset) or clear."""
    if ss is None:
        return {"status": ss_summary["status"], "decision": "unvetted" if ss_summary["status"] == "unvetted"
                else "clear", "note": ss_summary.get("note")}
    body = ss.body(i)
    out: dict = {"status": "vetted", "decision": "known_ssobject" if bool(ss.matched[i]) else "clear",
                 "radius_arcsec": ss.radius_arcsec, "nearest": body or None}
    if body:
        dec0 = np.deg2rad(body["dec"])
        dra = ((float(row["ra"]) - body["ra"] + 180.0) % 360.0 - 180.0) * np.cos(dec0) * 3600.0
        out["offset_arcsec"] = {"east": float(dra), "north": float((float(row["dec"]) - body["dec"]) * 3600.0)}
    if ss.matched[i]:
        out["known_ssobject"] = body["designation"]
    return out
