"""Moving-object linking: alerts of one night on a straight line become a tracklet; a stationary transient
alerted every frame, scattered false alerts and a body seen only twice do not."""

from __future__ import annotations

import numpy as np
import pytest

from openastro_parsl.tasks.transient.movers import LinkMoversConfig, LinkMoversTask, link_tracklets


def _alert(exp, mjd, ra, dec, k=0):
    return {"alert_id": f"cam-{exp}-{k}", "instrument": "cam", "exposure": exp, "mjd": mjd, "ra": ra, "dec": dec,
            "mag": 18.0}


def _night(rng, exps, t0, mover=True, rate=30.0, pa=120.0, ra0=150.1, dec0=2.2, noise=True):
    """One summary per exposure: the mover (rate "/h at position angle pa), a stationary transient, noise."""
    out = []
    cos = np.cos(np.radians(dec0))
    for j, exp in enumerate(exps):
        t = t0 + j * 20.0 / 1440.0
        h = (t - t0) * 24.0
        e, n = rate * h * np.sin(np.radians(pa)), rate * h * np.cos(np.radians(pa))
        alerts = [_alert(exp, t, ra0 + 0.01, dec0 - 0.01, 1)]  # the stationary transient
        if mover:
            alerts.append(_alert(exp, t, ra0 + (e + rng.normal(0, 0.3)) / 3600 / cos,
                                 dec0 + (n + rng.normal(0, 0.3)) / 3600, 2))
        if noise:
            alerts.append(_alert(exp, t, ra0 + rng.uniform(-0.02, 0.02), dec0 + rng.uniform(-0.02, 0.02), 3))
        out.append({"alerts": alerts})
    return out


def test_a_mover_is_linked_and_nothing_else():
    rng = np.random.default_rng(5)
    summaries = _night(rng, [1, 2, 3, 4, 5], 61139.0) + _night(rng, [6, 7], 61140.0)  # 2nd night: seen twice
    out = LinkMoversTask().run(summaries, data_id={"field": "demo1"})["movers"]
    (tr,) = out["tracklets"]
    assert tr["id"] == "demo1-mover-1" and tr["alert_ids"] == [f"cam-{e}-2" for e in (1, 2, 3, 4, 5)]
    assert tr["rate_arcsec_per_hour"] == pytest.approx(30.0, abs=1.0)
    assert tr["position_angle_deg"] == pytest.approx(120.0, abs=3.0)
    assert tr["rms_arcsec"] < 1.0
    assert "cam-6-2" in out["transient_alerts"] and "cam-7-2" in out["transient_alerts"]
    assert all(f"cam-{e}-1" in out["transient_alerts"] for e in range(1, 8))  # the stationary one stays
    assert out["n_alerts"] == len(out["transient_alerts"]) + 5


def test_no_alerts_and_slow_or_fast_limits():
    assert link_tracklets([], LinkMoversConfig()) == []
    rng = np.random.default_rng(6)
    # 1"/h over an hour is 1": within the scatter of a stationary source, not a mover
    slow = [a for s in _night(rng, [1, 2, 3, 4], 61139.0, rate=1.0, noise=False) for a in s["alerts"]]
    assert link_tracklets(slow, LinkMoversConfig()) == []
    fast = [a for s in _night(rng, [1, 2, 3, 4], 61139.0, rate=500.0, noise=False) for a in s["alerts"]]
    assert len(link_tracklets(fast, LinkMoversConfig())) == 1
    assert link_tracklets(fast, LinkMoversConfig(max_rate_arcsec_per_hour=100.0)) == []
