"""Print the demo run's science next to the survey's truth: zero-points, periods, the planet, the transient."""

from __future__ import annotations

import sys

import numpy as np

from openastro_parsl.butler import Butler
from openastro_parsl.demo import SURVEY_DIR


def main(repo: str, run: str) -> None:
    import json

    butler = Butler(repo)
    truth = json.loads((butler.root / SURVEY_DIR / "truth.json").read_text())
    reg = butler.registry

    def get(name, data_id):
        refs = reg.query_datasets(name, [run], data_id=data_id)
        return butler.get(name, data_id, collections=run) if refs else None

    dzp = [c["zp"] - e["zero_point"] for e in truth["exposures"]
           if (c := get("photoCalib", {"instrument": e["instrument"], "exposure": e["exposure"]}))]
    if dzp:
        print(f"zero-points: {len(dzp)} frames, median |fit - truth| {np.median(np.abs(dzp)):.4f} mag")
    for ref in reg.query_datasets("fieldZeropoints", [run]):
        meta = butler.get(ref).meta
        known = meta.get("colour_terms_known", [])
        if known:
            print(f"colour terms taken as known on {meta['field']} (from the standard field): " + ", ".join(
                f"{k} {meta['colour_terms'][k][0]:+.4f} (truth "
                f"{truth['instruments'][k.split('/')[0]]['colour_terms'][k.split('/')[1]]:+.4f})" for k in known))
    zp_true = {(e["instrument"], e["exposure"]): e["zero_point"] for e in truth["exposures"]}
    pooled = []
    for inst in truth["instruments"]:
        for band in ("g", "r"):
            hist = get("zeropointHistory", {"instrument": inst, "band": band})
            if hist is not None:
                pooled += [row["zp_pooled"] - zp_true[(inst, int(row["exposure"]))] for row in hist]
    if pooled:
        a = np.abs(pooled)
        print(f"zero-points of the field fit (zeropointHistory zp_pooled): median {np.median(a):.4f}, max "
              f"{a.max():.4f} mag, {int(np.sum(a > 0.02))} of {len(a)} beyond 0.02")
    for v in truth["variables"]:
        p = get("periodogram", {"target": v["name"]})
        if p:
            print(f"{v['name']}: period {p['period']:.5f} d (truth {v['period']:.5f}), FAP {p['fap']:.1e}")
    host = truth["planet"]["host"]
    s = get("transitSearch", {"target": host})
    if s:
        print(f"{host}: transit period {s['period']:.5f} d (truth {truth['planet']['linear_ephemeris']['period']:.5f}),"
              f" depth {s['depth']:.4f}")
    t = get("transitTimes", {"target": host})
    if t is not None:
        print(f"{host}: {len(t)} transits timed, O-C rms {np.std(np.asarray(t['oc'])) * 1440:.1f} min")
    tr = truth["transient"]
    n_alerts, hits, n_frames = 0, 0, 0
    for e in truth["exposures"]:
        a = get("alerts", {"instrument": e["instrument"], "exposure": e["exposure"]})
        if a is None:
            continue
        n_frames += 1
        records = a["alerts"] if isinstance(a, dict) else a
        n_alerts += len(records)
        hits += sum(1 for r in records if np.hypot((r["ra"] - tr["ra"]) * np.cos(np.radians(tr["dec"])),
                                                   r["dec"] - tr["dec"]) * 3600 < 3)
    print(f"alerts: {n_alerts} in {n_frames} frames, {hits} on the injected transient {tr['name']}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
