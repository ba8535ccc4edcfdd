"""Alerts: confident, unknown, brightening point sources of one exposure, as JSON records with cutout PNGs.

A candidate becomes an alert when the CNN calls it real (score above the threshold), it brightened (a
positive difference), it is significant, its footprint is clean (not on the frame edge or outside the
template), and nothing known sits there: no reference-catalogue source and no listed known variable within
the match radius (the larger of a fixed radius and a multiple of the seeing, since a residual of a catalogued
star can be offset by up to about a FWHM).
"""

from __future__ import annotations

import io

import numpy as np
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field

from ...astro.jsonable import finite_or_none
from ...astro.match import nearest
from ...pipeline.connections import Connections, Input, Output, PrerequisiteInput
from ...pipeline.task import PipelineTask, Resources, TaskConfig
from .diffim import FLAGS

__all__ = ["KnownSource", "select_alerts", "alert_figure", "AlertsTask"]


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


def select_alerts(scored: Table, refcat: Table | None, config: AlertsConfig) -> tuple[np.ndarray, dict]:
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
    }
    ok = ~np.logical_or.reduce(list(reasons.values()))
    extra = {"radius_arcsec": radius, "cat_idx": cat_idx, "cat_sep": cat_sep, "kv_idx": kv_idx, "kv_sep": kv_sep}
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
        for r, (i, title) in enumerate(zip(rows, titles)):
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
    alerts = Output("alerts", ("instrument", "exposure"), "StructuredData", doc="Alert records (JSON).")
    stamps = Output("alertStamps", ("instrument", "exposure"), "Plot", doc="Cutouts of the alerts (PNG).")


class AlertsTask(PipelineTask):
    """Alert records for the confident, uncatalogued brightenings of one exposure, and their cutouts."""

    dimensions = ("instrument", "exposure")
    Config = AlertsConfig
    Connections = AlertsConnections
    resources = Resources(cores=1, memory_mb=512, walltime_min=5)

    def run(self, scored, cutouts, refcat, data_id=None):
        c = self.config
        did = dict(data_id) if data_id else {}
        where = ", ".join(f"{k}={v}" for k, v in did.items()) or "diaSrcScored"
        if "rb_score" not in scored.colnames:
            raise ValueError(f"{where}: diaSrcScored has no rb_score column (run rbClassify first)")
        ok, info = select_alerts(scored, refcat, c)
        meta = scored.meta
        instrument = str(did.get("instrument", meta.get("instrument", "")))
        exposure = int(did.get("exposure", meta.get("exposure", -1)))
        ids = np.asarray(cutouts.get("id", np.arange(len(scored))))
        row_of = {int(v): k for k, v in enumerate(ids)}
        alerts = []
        order = np.flatnonzero(ok)[np.argsort(-np.asarray(scored["rb_score"])[ok])] if len(scored) else []
        for rank, i in enumerate(order):
            r = scored[int(i)]
            cid = int(r["id"]) if "id" in scored.colnames else int(i)
            ci = info["cat_idx"][i]
            nearest_ref = None
            if ci >= 0 and refcat is not None and len(refcat):
                nearest_ref = {"id": int(refcat["id"][ci]), "sep_arcsec": float(info["cat_sep"][i]),
                               "r": float(refcat["r"][ci]) if "r" in refcat.colnames else None}
            alerts.append({
                "alert_id": f"{instrument}-{exposure}-{cid}", "instrument": instrument, "exposure": exposure,
                "band": str(meta.get("band", "")), "mjd": float(meta.get("mjd_mid", np.nan)),
                "candidate_id": cid, "ra": float(r["ra"]), "dec": float(r["dec"]),
                "x": float(r["x"]), "y": float(r["y"]), "flux": float(r["flux"]),
                "flux_err": float(r["flux_err"]), "snr": float(r["snr"]),
                "mag": finite_or_none(r["mag"]), "mag_err": finite_or_none(r["mag_err"]),
                "rb_score": float(r["rb_score"]), "fwhm_pix": float(r["fwhm"]), "flags": int(r["flags"]),
                "nearest_refcat": nearest_ref, "stamp_row": rank if rank < c.max_stamps else None,
                "cutout_index": row_of.get(cid),
            })
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
                         "reject_flags": c.reject_flags},
            "rb_version": meta.get("rb_version"), "alerts": alerts,
        }
        self.log.info("%s: %d candidates, %d scored real, %d alerts", where, summary["n_candidates"],
                      summary["n_real"], len(alerts))
        return {"alerts": summary, "stamps": png}
