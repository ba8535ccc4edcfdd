"""Moving-object linking: alerts of one night that line up in position and time are one unknown moving body.

Per field, the exposure alerts (after vetting against known minor planets) are split into nights (gaps of
more than ``night_gap_hours``) and, within a night, every pair of alerts from different exposures at least
``min_dt_minutes`` apart proposes a uniform motion; the alerts of other exposures within ``tolerance_arcsec``
of that line join it. The proposal with most exposures (then the smallest scatter) is kept if it spans at
least ``min_exposures`` exposures, really moves (``min_motion_arcsec`` over its span, so a stationary
transient alerted every frame is never linked) and fits a straight line to ``tolerance_arcsec``; its members
leave the pool and the search repeats. Each tracklet is reported with its rate and direction; the alerts it
holds are not transients, and ``transient_alerts`` lists the rest.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from ...astro.jsonable import finite_or_none
from ...pipeline.connections import Connections, Input, Output
from ...pipeline.task import PipelineTask, Resources, TaskConfig

__all__ = ["LinkMoversConfig", "LinkMoversTask", "link_tracklets"]


class LinkMoversConfig(TaskConfig):
    min_exposures: int = Field(3, ge=3, description="Fewest exposures (distinct times) in a tracklet.")
    tolerance_arcsec: float = Field(2.0, gt=0, description="Largest offset of a member from the fitted line.")
    min_motion_arcsec: float = Field(4.0, gt=0, description="Least motion over a tracklet's span (not stationary).")
    max_rate_arcsec_per_hour: float = Field(3600.0, gt=0, description="Fastest motion linked (NEOs: degrees/day).")
    min_dt_minutes: float = Field(5.0, gt=0, description="Least time between the two alerts that propose a line.")
    night_gap_hours: float = Field(6.0, gt=0, description="A longer gap between alerts starts a new night.")


def _tangent(ra, dec, ra0, dec0):
    """Gnomonic standard coordinates (arcsec) about (ra0, dec0)."""
    a, d, a0, d0 = (np.deg2rad(np.asarray(v, float)) for v in (ra, dec, ra0, dec0))
    cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a - a0)
    xi = np.cos(d) * np.sin(a - a0) / cosc
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a - a0)) / cosc
    return np.rad2deg(xi) * 3600.0, np.rad2deg(eta) * 3600.0


def _fit(t, x, y):
    """Least-squares uniform motion: (x0, vx, y0, vy) at t, and the rms offset from it."""
    A = np.vstack([np.ones_like(t), t]).T
    (x0, vx), *_ = np.linalg.lstsq(A, x, rcond=None)
    (y0, vy), *_ = np.linalg.lstsq(A, y, rcond=None)
    res = np.hypot(x - (x0 + vx * t), y - (y0 + vy * t))
    return (x0, vx, y0, vy), res


def _link_night(t, x, y, exp, c: LinkMoversConfig) -> list[np.ndarray]:
    """Index arrays of the tracklets among one night's alerts (t hours, x/y arcsec, exp exposure keys)."""
    pool = np.ones(len(t), bool)
    out: list[np.ndarray] = []
    while pool.sum() >= c.min_exposures:
        best, best_key = None, None
        idx = np.flatnonzero(pool)
        for a in idx:
            for b in idx:
                dt = t[b] - t[a]
                if dt * 60.0 < c.min_dt_minutes or exp[a] == exp[b]:
                    continue
                vx, vy = (x[b] - x[a]) / dt, (y[b] - y[a]) / dt
                if np.hypot(vx, vy) > c.max_rate_arcsec_per_hour:
                    continue
                off = np.hypot(x[idx] - (x[a] + vx * (t[idx] - t[a])), y[idx] - (y[a] + vy * (t[idx] - t[a])))
                near = idx[off <= c.tolerance_arcsec]
                # one alert per exposure: the nearest to the line
                members: dict = {}
                for k, o in zip(near, off[off <= c.tolerance_arcsec], strict=True):
                    if exp[k] not in members or o < members[exp[k]][1]:
                        members[exp[k]] = (k, o)
                m = np.array(sorted(k for k, _ in members.values()))
                if len(m) < c.min_exposures:
                    continue
                (_, fvx, _, fvy), res = _fit(t[m], x[m], y[m])
                span = t[m].max() - t[m].min()
                if res.max() > c.tolerance_arcsec or np.hypot(fvx, fvy) * span < c.min_motion_arcsec:
                    continue
                key = (len(m), -float(np.sqrt(np.mean(res**2))))
                if best_key is None or key > best_key:
                    best, best_key = m, key
        if best is None:
            break
        out.append(best)
        pool[best] = False
    return out


def link_tracklets(alerts: list[dict], config: LinkMoversConfig) -> list[dict]:
    """Tracklets (dicts: members, rate, direction, fit) among alert records (ra, dec, mjd, exposure keys)."""
    if not alerts:
        return []
    mjd = np.array([float(a["mjd"]) for a in alerts])
    order = np.argsort(mjd, kind="stable")
    nights, start = [], 0
    for i in range(1, len(order) + 1):
        if i == len(order) or (mjd[order[i]] - mjd[order[i - 1]]) * 24.0 > config.night_gap_hours:
            nights.append(order[start:i])
            start = i
    out = []
    for night in nights:
        ra = np.array([float(alerts[i]["ra"]) for i in night])
        dec = np.array([float(alerts[i]["dec"]) for i in night])
        ra0, dec0 = float(np.median(ra)), float(np.median(dec))
        x, y = _tangent(ra, dec, ra0, dec0)
        t0 = float(mjd[night].min())
        t = (mjd[night] - t0) * 24.0
        exp = [(alerts[i]["instrument"], alerts[i]["exposure"]) for i in night]
        for m in _link_night(t, x, y, exp, config):
            (x0, vx, y0, vy), res = _fit(t[m], x[m], y[m])
            members = [alerts[int(night[k])] for k in m]
            out.append({
                "n": len(m), "night_mjd": round(t0, 5),
                "alert_ids": [a["alert_id"] for a in members],
                "mjd": [float(a["mjd"]) for a in members], "ra": [float(a["ra"]) for a in members],
                "dec": [float(a["dec"]) for a in members],
                "rate_arcsec_per_hour": float(np.hypot(vx, vy)),
                "rate_deg_per_day": float(np.hypot(vx, vy) * 24.0 / 3600.0),
                "position_angle_deg": float(np.degrees(np.arctan2(vx, vy)) % 360.0),  # direction, east of north
                "rms_arcsec": float(np.sqrt(np.mean(res**2))),
                "mean_mag": finite_or_none(np.nanmean([a["mag"] if a.get("mag") is not None else np.nan
                                                      for a in members])),
            })
    return out


class LinkMoversConnections(Connections):
    alerts = Input("alerts", ("instrument", "exposure"), "StructuredData", multiple=True,
                   doc="Every exposure's alert records (after minor-planet vetting).")
    movers = Output("movingObjects", ("field",), "StructuredData",
                    doc="Tracklets of possible unknown moving objects, and the alerts that remain transients.")


class LinkMoversTask(PipelineTask):
    """Link a field's alerts that move in a straight line within a night into tracklets (unknown movers)."""

    dimensions = ("field",)
    Config = LinkMoversConfig
    Connections = LinkMoversConnections
    resources = Resources(cores=1, memory_mb=512, walltime_min=10)

    def run(self, alerts, data_id=None):
        did = dict(data_id) if data_id else {}
        records = [a for summary in alerts for a in summary.get("alerts", [])]
        tracklets = link_tracklets(records, self.config)  # type: ignore[arg-type]
        for k, tr in enumerate(tracklets):
            tr["id"] = f"{did.get('field', 'field')}-mover-{k + 1}"
        linked = {a for tr in tracklets for a in tr["alert_ids"]}
        self.log.info("%s: %d alerts in %d exposures, %d tracklet(s) holding %d of them", did or "field",
                      len(records), len(alerts), len(tracklets), len(linked))
        return {"movers": {
            "field": did.get("field"), "n_exposures": len(alerts), "n_alerts": len(records),
            "criteria": self.config.model_dump(mode="json"), "tracklets": tracklets,
            "transient_alerts": [a["alert_id"] for a in records if a["alert_id"] not in linked],
        }}
