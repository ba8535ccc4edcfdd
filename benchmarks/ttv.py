"""TTV inference cost and calibration: likelihood calls/s and ttvFit wall time for one and two planets, and
the demo perturber's recovery over several noise seeds.

One planet: the demo survey's hot Jupiter b (truth.json of a freshly generated small survey) with its
non-transiting near-2:1 perturber c fitted as a perturber; b's N-body transit times at the demo's observed
epochs plus 1-2 minutes of Gaussian noise. Two planets: K2-24 b and c from ../shared/data/real (Petigura et
al. 2018, BKJD), both transiting, all ten parameters free.

    python benchmarks/ttv.py                         # calls/s of both, then both inferences (nlive 150, 2 cores)
    python benchmarks/ttv.py --skip-inference        # calls/s only
    python benchmarks/ttv.py --demo-seeds 5          # + perturber mass/period inside the 95 % intervals, per seed
    python benchmarks/ttv.py --skip-inference --k2-24-seeds 2   # K2-24's validation fit (the slow test's
                                                     # settings) per seed: masses against the published ones

Last line: one_planet_calls_per_s=... two_planet_calls_per_s=... [one_planet_wall_s=... one_planet_ncall=...
two_planet_wall_s=... two_planet_ncall=...] [demo_seeds_truth_in_95=k/n].
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

K2_24 = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "k2-24_petigura2018_transit_times.txt"
M_EARTH_MSUN = 3.003489596e-6


def demo_truth() -> dict:
    from openastro_parsl.sim.survey import generate_survey

    with tempfile.TemporaryDirectory() as tmp:
        generate_survey(Path(tmp) / "survey", seed=42, size="small")
        return json.loads((Path(tmp) / "survey" / "truth.json").read_text())


def demo_table(truth: dict, seed: int):
    from astropy.table import Table

    p = truth["planet"]
    ep, tt = np.array(p["epochs"]), np.array(p["transit_times"])
    sel = np.isin(ep, p["observed_epochs"])
    rng = np.random.default_rng(seed)
    err = rng.uniform(60.0, 120.0, sel.sum()) / 86400.0
    return Table({"epoch": ep[sel], "t_obs": tt[sel] + rng.normal(0.0, err), "t_obs_err": err})


def demo_config(**kw):
    from openastro_parsl.tasks.lightcurve.ttv import TtvFitConfig

    return TtvFitConfig(**({"planet_defaults": {"mass_earth": [3.0, 3000.0], "eccentricity_max": 0.0,
                                                 "period_window": 0.003, "t0_window_days": 0.02},
                            "perturbers": [{"name": "c", "period_ratio": [1.5, 3.0], "mass_earth": [1.0, 1000.0],
                                            "eccentricity_max": 0.2}],
                            "compare_without_perturbers": False, "progress_every_s": 1e9} | kw))


def k2_24_tables():
    from openastro_parsl.ingest.transit_times import read_transit_times, transit_times_tables

    tables = transit_times_tables(read_transit_times(K2_24, time_system="BKJD"))
    return [tables["b"], tables["c"]], {"transit_times": [{"target": "K2-24b"}, {"target": "K2-24c"}]}


def k2_24_config(**kw):
    from openastro_parsl.tasks.lightcurve.ttv import TtvFitConfig

    return TtvFitConfig(**({"stellar_masses": {"K2-24": 1.07}, "progress_every_s": 1e9,
                            "planet_defaults": {"mass_earth": [1.0, 100.0], "mass_prior": "uniform",
                                                "period_window": 0.005, "t0_window_days": 0.1}} | kw))


PUBLISHED_MASSES = {"K2-24b": (19.0 - 2.1, 19.0 + 2.2), "K2-24c": (15.4 - 1.8, 15.4 + 1.9)}  # Petigura+ 2018


def validation_config(seed: int, nlive: int | None = None):
    """The settings of the K2-24 slow fit (tests/tasks/test_ttv_k2_24.py, K2_24_TTVNEST_CONFIG: the reference
    analysis's priors, Cartesian eccentricities) with another seed (and live points, when given)."""
    from openastro_parsl.tasks.lightcurve.ttv import TtvFitConfig

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "tasks"))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_ttv_k2_24 import K2_24_TTVNEST_CONFIG

    return TtvFitConfig(**(K2_24_TTVNEST_CONFIG | {"seed": seed, "progress_every_s": 60.0}
                           | ({"nlive": nlive} if nlive else {})))


def loglike_rate(model, seconds: float, seed: int = 0) -> float:
    """Likelihood calls/s (one process) at random prior draws."""
    rng = np.random.default_rng(seed)
    xs = [model.prior_transform(rng.random(model.ndim)) for _ in range(256)]
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        model.loglike(xs[n % len(xs)])
        n += 1
    return n / (time.perf_counter() - t0)


def model_of(cfg, tables, ids):
    from openastro_parsl.tasks.lightcurve import ttv_model as tm
    from openastro_parsl.tasks.lightcurve.ttv import build_model

    data = [tm.TransitData.from_table(t, name=i["target"]) for t, i in zip(tables, ids["transit_times"], strict=True)]
    return build_model(cfg, data, cfg.stellar_masses.get("K2-24", cfg.stellar_mass_msun))


def infer(label: str, cfg, tables, ids, field: str) -> dict:
    from openastro_parsl.tasks.lightcurve.ttv import TtvFitTask

    t0 = time.time()
    s = TtvFitTask(cfg).run(tables, data_id={"field": field}, data_ids=ids)["summary"]
    wall = time.time() - t0
    sam = s["sampler"]
    print(f"{label}: nlive={cfg.nlive}, {sam['cores']} cores, {len(s['free_parameters'])} free, "
          f"{sam['ncall']} likelihood calls, {sam['niter']} iterations, wall {wall:.1f} s "
          f"({sam['calls_per_s']:.0f} calls/s), ln Z = {s['log_evidence']:.2f} ± {s['log_evidence_err']:.2f}")
    for b, p in s["planets"].items():
        print(f"  {b:8s} mass {p['mass_earth']['median']:.3g} M_earth 95% [{p['mass_earth']['lo95']:.3g}, "
              f"{p['mass_earth']['hi95']:.3g}]  period {p['period_days']['median']:.5f} d 95% "
              f"[{p['period_days']['lo95']:.5f}, {p['period_days']['hi95']:.5f}]  e {p['eccentricity']['median']:.3f}")
    return s | {"wall_s": wall}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nlive", type=int, default=150, help="live points of the inferences")
    ap.add_argument("--cores", type=int, default=2, help="pool size of the inferences")
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each calls/s measurement")
    ap.add_argument("--seed", type=int, default=7, help="noise seed of the demo's synthetic transit times")
    ap.add_argument("--demo-seeds", type=int, default=0, help="fit the demo with this many noise seeds and count "
                    "those whose 95 %% intervals hold the perturber's mass and period")
    ap.add_argument("--runs", type=int, default=1, help="independent runs merged per inference (n_runs)")
    ap.add_argument("--k2-24-seeds", type=int, default=0, help="run K2-24's validation fit (settings of "
                    "tests/tasks/test_ttv_k2_24.py) with this many seeds and compare with the published masses")
    ap.add_argument("--k2-24-nlive", type=int, default=None, help="live points per run of the K2-24 validation fit "
                    "(default: the slow test's)")
    ap.add_argument("--skip-inference", action="store_true")
    args = ap.parse_args(argv)

    truth = demo_truth()
    c = truth["planet"]["ttvfast"]["planets"][1]
    one_tables, one_ids = [demo_table(truth, args.seed)], {"transit_times": [{"target": "OA-T1"}]}
    two_tables, two_ids = k2_24_tables()
    kw = {"nlive": args.nlive, "n_cores": args.cores, "seed": 3, "n_runs": args.runs}
    one_rate = loglike_rate(model_of(demo_config(**kw), one_tables, one_ids), args.seconds)
    two_rate = loglike_rate(model_of(k2_24_config(**kw), two_tables, two_ids), args.seconds)
    print(f"log-likelihood, 1 transiting planet + perturber (demo): {one_rate:.0f} calls/s (1 core); "
          f"2 transiting planets (K2-24): {two_rate:.0f} calls/s (1 core); load {os.getloadavg()[0]:.1f}")
    line = f"one_planet_calls_per_s={one_rate:.0f} two_planet_calls_per_s={two_rate:.0f}"
    if not args.skip_inference:
        one = infer("one planet + perturber (demo)", demo_config(**kw), one_tables, one_ids, "F1")
        two = infer("two planets (K2-24)", k2_24_config(**kw), two_tables, two_ids, "K2-24")
        line += (f" one_planet_wall_s={one['wall_s']:.1f} one_planet_ncall={one['n_likelihood_calls']}"
                 f" two_planet_wall_s={two['wall_s']:.1f} two_planet_ncall={two['n_likelihood_calls']}")
    if args.demo_seeds:
        hits = 0
        for seed in range(1, args.demo_seeds + 1):
            s = infer(f"demo noise seed {seed}", demo_config(**kw), [demo_table(truth, seed)], one_ids, "F1")
            p = s["planets"]["c"]
            ok = (p["mass_earth"]["lo95"] <= c["mass"] / M_EARTH_MSUN <= p["mass_earth"]["hi95"]
                  and p["period_days"]["lo95"] <= c["period"] <= p["period_days"]["hi95"])
            hits += ok
            print(f"  truth (mass {c['mass'] / M_EARTH_MSUN:.1f} M_earth, period {c['period']:.4f} d) "
                  f"inside the 95 % intervals: {ok}")
        line += f" demo_seeds_truth_in_95={hits}/{args.demo_seeds}"
    if args.k2_24_seeds:
        hits = 0
        for seed in range(1, args.k2_24_seeds + 1):
            s = infer(f"K2-24 validation, seed {seed}", validation_config(seed, args.k2_24_nlive), two_tables, two_ids, "K2-24")
            ok = all(s["planets"][n]["mass_earth"]["lo95"] < hi and s["planets"][n]["mass_earth"]["hi95"] > lo
                     for n, (lo, hi) in PUBLISHED_MASSES.items())
            hits += ok
            print(f"  run agreement: {s['run_agreement']}; 95 % mass intervals overlap the published: {ok}")
        line += f" k2_24_seeds_overlap_published={hits}/{args.k2_24_seeds}"
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
