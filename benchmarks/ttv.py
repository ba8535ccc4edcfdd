"""TTV inference cost: TTVFast calls per second, and a full ttvFit inference's wall time.

The system is the demo's (truth.json of a freshly generated small survey): the hot Jupiter b and its
near-2:1 perturber c, b's N-body transit times at the demo's observed epochs plus 1-2 minutes of Gaussian
noise. The inference uses wide priors (mass 1e-6..1e-2 Msun, period 1.5..3 x P_b, e < 0.2, free angles),
the default fixed known-planet mass, and a pool of --cores worker processes.

    python benchmarks/ttv.py                       # calls/s, then the inference with 250 live points on 2 cores
    python benchmarks/ttv.py --nlive 500 --cores 2
    python benchmarks/ttv.py --skip-inference

Last line: ttvfast_calls_per_s=... loglike_calls_per_s=... [nlive=... cores=... wall_s=... ncall=...
truth_in_95=...].
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def demo_truth() -> dict:
    from openastro_parsl.sim.survey import generate_survey

    with tempfile.TemporaryDirectory() as tmp:
        generate_survey(Path(tmp) / "survey", seed=42, size="small")
        return json.loads((Path(tmp) / "survey" / "truth.json").read_text())


def transit_table(truth: dict, seed: int):
    from astropy.table import Table

    from openastro_parsl.tasks.lightcurve.ttv_model import fit_linear_ephemeris

    p = truth["planet"]
    ep, tt = np.array(p["epochs"]), np.array(p["transit_times"])
    sel = np.isin(ep, p["observed_epochs"])
    rng = np.random.default_rng(seed)
    err = rng.uniform(60.0, 120.0, sel.sum()) / 86400.0
    t_obs = tt[sel] + rng.normal(0.0, err)
    t0, period, _ = fit_linear_ephemeris(ep[sel], t_obs, err)
    table = Table({"epoch": ep[sel], "t_obs": t_obs, "t_obs_err": err, "t_pred": t0 + period * ep[sel]})
    table["oc"] = table["t_obs"] - table["t_pred"]
    table["oc_err"] = err
    table.meta.update(period=period, t0=t0)
    return table


def ttvfast_rate(truth: dict, seconds: float) -> float:
    """Bare ttvfast.ttvfast calls/s for the demo's two planets over the demo season."""
    import ttvfast
    from ttvfast.models import Planet

    tv = truth["planet"]["ttvfast"]
    planets = [Planet(*(p[k] for k in Planet.KEYS)) for p in tv["planets"]]
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ttvfast.ttvfast(planets, truth["planet"]["stellar_mass_msun"], tv["t0"], tv["dt"], tv["t_end"])
        n += 1
    return n / (time.perf_counter() - t0)


def loglike_rate(model, seconds: float, seed: int = 0) -> float:
    """Full likelihood calls/s (TTVFast at P_b/20 steps + profile) at random prior draws."""
    rng = np.random.default_rng(seed)
    xs = [model.prior_transform(rng.random(model.ndim)) for _ in range(256)]
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        model.loglike(xs[n % len(xs)])
        n += 1
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nlive", type=int, default=250, help="live points of the inference")
    ap.add_argument("--cores", type=int, default=2, help="pool size of the inference")
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each calls/s measurement")
    ap.add_argument("--seed", type=int, default=7, help="noise seed of the synthetic transit times")
    ap.add_argument("--skip-inference", action="store_true")
    args = ap.parse_args(argv)

    from openastro_parsl.tasks.lightcurve import ttv_model as tm
    from openastro_parsl.tasks.lightcurve.ttv import TtvFitConfig, TtvFitTask, build_priors

    truth = demo_truth()
    table = transit_table(truth, args.seed)
    cfg = TtvFitConfig(mass_range=[1e-6, 1e-2], period_ratio_range=[1.5, 3.0], eccentricity_range=[0.0, 0.2],
                       nlive=args.nlive, n_cores=args.cores, seed=3, progress_every_s=1e9)
    data = tm.TransitData.from_table(table)
    model = tm.TtvModel(data, build_priors(cfg, data.period), cfg.stellar_mass_msun)

    raw = ttvfast_rate(truth, args.seconds)
    print(f"ttvfast.ttvfast, 2 planets, {truth['planet']['ttvfast']['t_end'] - truth['planet']['ttvfast']['t0']:.0f} d "
          f"at dt={truth['planet']['ttvfast']['dt']} d: {raw:.0f} calls/s (1 core)")
    ll = loglike_rate(model, args.seconds)
    print(f"ttvFit log-likelihood ({data.n} transits, {model.ndim} free parameters): {ll:.0f} calls/s (1 core)")
    line = f"ttvfast_calls_per_s={raw:.0f} loglike_calls_per_s={ll:.0f}"
    if not args.skip_inference:
        t0 = time.time()
        s = TtvFitTask(cfg).run(table, data_id={"target": "OA-T1"})["summary"]
        wall = time.time() - t0
        c = truth["planet"]["ttvfast"]["planets"][1]
        ci = s["credible_intervals"]
        ok = all(ci[n]["lo95"] <= c[n] <= ci[n]["hi95"] for n in ("mass", "period"))
        sam = s["sampler"]
        print(f"inference: nlive={args.nlive}, {args.cores} cores, {sam['ncall']} likelihood calls, "
              f"{sam['niter']} iterations, wall {wall:.1f} s (sampler {sam['wall_time_s']:.1f} s, "
              f"{sam['ncall'] / sam['wall_time_s']:.0f} calls/s)")
        print(f"ln Z = {s['log_evidence']:.2f} ± {s['log_evidence_err']:.2f}, "
              f"ln B (perturber vs linear) = {s['ln_bayes_factor_vs_linear']:.1f}")
        for n in ("mass", "period", "eccentricity"):
            q = ci[n]
            print(f"  {n:13s} median {q['median']:.4g}  68% [{q['lo68']:.4g}, {q['hi68']:.4g}]  "
                  f"95% [{q['lo95']:.4g}, {q['hi95']:.4g}]  truth {c.get(n, 0.0):.4g}")
        ml = s["max_likelihood"]
        print(f"  max likelihood: mass {ml['mass']:.3g}, period {ml['period']:.4f}, e {ml['eccentricity']:.3f}, "
              f"chi2 {ml['chi2']:.2f} for {s['n_transits']} transits")
        line += (f" nlive={args.nlive} cores={args.cores} wall_s={wall:.1f} ncall={sam['ncall']} "
                 f"truth_in_95={ok}")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
