"""Lomb-Scargle speed: astropy's ``fast`` (Press & Rybicki) vs nifty-ls (``fastnifty``, finufft); with
``--survey``, the period search's cost and accuracy on Stripe-82-like RR Lyrae.

N irregular times over a 30-day baseline, a sinusoid plus noise, M evenly spaced frequencies up to 50/day;
each method timed best-of-``--repeat`` through astropy's ``LombScargle.power`` (nifty-ls registers its
method with astropy on import), plus nifty-ls called directly. ``--slow`` adds astropy's exact O(N*M)
``cython`` method as the accuracy reference (about a minute at the default size).

    python benchmarks/lombscargle.py --points 10000 --frequencies 100000

Last line: points=N frequencies=M astropy_fast_s=X nifty_s=Y speedup=X/Y max_power_diff=D

``--survey``: ``--stars`` seeded RR Lyrae from ``openastro_parsl.sim.rrlyrae`` (ugriz, 60-300 epochs over ten
~100-day seasons, one visit a night at the field's transit, so 1-day aliases), each searched four ways: the
multiband search (all bands), the single-band search on ``--band``, plain astropy Lomb-Scargle on that band
(highest peak, same grid) and the multiband statistic alone (highest peak, no refinement). Costs are given as
ratios to the single-band search; a period is right when |P - P_true| / P_true < 1e-3; a wrong one is a 1-day
alias when its frequency is the true one +- 1..3 cycles per sidereal day (+- up to 2 per year, the daily
alias's side lobes; within 1e-3 of the true frequency), else half/double or other. ``--legacy N`` also times astropy's ``LombScargleMultiband`` (``flexible``, the
search's multiband spectrum before issue 14) on the first N stars' grids. ``--missing 0.8`` drops 80 % of
the band-visits (about one band a visit, 12-60 epochs a band: VanderPlas & Ivezic's subsampled Stripe 82).

    python benchmarks/lombscargle.py --survey --stars 100 --seed 1
    python benchmarks/lombscargle.py --survey --stars 100 --seed 1 --missing 0.8

Last line: stars=N multiband_s=... single_s=... cost_ratio=... multiband_ok=... single_ok=... plain_ok=...
multiband_alias=... single_alias=... plain_alias=...
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _best(fn, repeat):
    times = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def classify(p, truth, sidereal_day, year=365.25) -> str:
    """right (|dP|/P < 1e-3); alias (f_true + k per sidereal day, k = +-1..3, plus m = -2..2 per year: the
    daily alias and its yearly side lobes); half/double; or other."""
    if abs(p - truth) / truth < 1e-3:
        return "right"
    f, ft = 1 / p, 1 / truth
    for k in (-3, -2, -1, 1, 2, 3):
        if any(abs(f - ft - k / sidereal_day - m / year) < 1e-3 * ft for m in range(-2, 3)):
            return "alias"
    if any(abs(p / truth - r) < 2e-3 for r in (0.5, 2.0)):
        return "half/double"
    return "other"


def survey(args):
    from astropy.timeseries import LombScargleMultiband

    from openastro_parsl.sim.rrlyrae import SIDEREAL_DAY, stripe82_like
    from openastro_parsl.tasks.lightcurve.multiband import fast_method, fast_power, multiband_spectrum
    from openastro_parsl.tasks.lightcurve.periodogram import grid_limits, lomb_scargle_search

    stars = stripe82_like(args.seed, args.stars, missing=args.missing)
    kw = {"min_period": 0.1, "max_period": None, "samples_per_peak": 10.0}
    lomb_scargle_search(*stars[0].per_band()[args.band])  # imports and first-call set-up, not timed
    lomb_scargle_search(stars[0].t, stars[0].mag, stars[0].mag_err, stars[0].band)
    rows = []
    legacy = []
    for i, s in enumerate(stars):
        t, y, e = s.per_band()[args.band]
        t0 = time.perf_counter()
        multi = lomb_scargle_search(s.t, s.mag, s.mag_err, s.band, **kw)
        t1 = time.perf_counter()
        single = lomb_scargle_search(t, y, e, **kw)
        t2 = time.perf_counter()
        fmin, fmax, df = grid_limits(t, **kw)
        grid = np.arange(fmin, fmax, df)
        plain = 1 / grid[np.argmax(fast_power(t, y, e, grid, fast_method()))]
        fmin, fmax, df = grid_limits(s.t, **kw)
        spec = multiband_spectrum(s.t, s.mag, s.mag_err, s.band, fmin=fmin, fmax=fmax, df=df,
                                  coarse_samples_per_peak=3.0, samples_per_peak=10.0, n_peaks=50)
        rows.append({"type": s.truth["type"], "P": s.truth["period"], "n": len(t), "multi_s": t1 - t0,
                     "single_s": t2 - t1, "multiband": multi.period, "single": single.period, "plain": plain,
                     "statistic": 1 / spec.peak_frequency[0]})
        if i < args.legacy:
            t0 = time.perf_counter()
            LombScargleMultiband(s.t, s.mag, s.band, s.mag_err, nterms_base=1, nterms_band=0).power(
                np.arange(fmin, fmax, df), method="flexible")
            legacy.append((time.perf_counter() - t0) / (t2 - t1))

    multi_s = np.array([r["multi_s"] for r in rows])
    single_s = np.array([r["single_s"] for r in rows])
    ratio = multi_s.sum() / single_s.sum()
    print(f"Period search on {len(rows)} Stripe-82-like RR Lyrae (seed {args.seed}, missing {args.missing}; "
          f"{sum(r['type'] == 'ab' for r in rows)} ab, {sum(r['type'] == 'c' for r in rows)} c), "
          f"single band {args.band}, {int(np.median([r['n'] for r in rows]))} {args.band} epochs median")
    print(f"cost: multiband {multi_s.sum():.1f} s, single-band {single_s.sum():.1f} s; multiband / single-band "
          f"= {ratio:.2f} (per star: median {np.median(multi_s / single_s):.2f}, "
          f"max {np.max(multi_s / single_s):.2f})")
    if legacy:
        print(f"cost: astropy LombScargleMultiband flexible spectrum alone / single-band search = "
              f"{np.median(legacy):.0f} (median of {len(legacy)} stars)")
    methods = ["multiband", "single", "plain", "statistic"]
    labels = {"multiband": "multiband search", "single": f"single-band search ({args.band})",
              "plain": f"plain astropy LS ({args.band})", "statistic": "multiband statistic alone"}
    outcome = {m: [classify(r[m], r["P"], SIDEREAL_DAY) for r in rows] for m in methods}
    print(f"{'method':30s} {'right':>7s} {'1-d alias':>9s} {'half/dbl':>9s} {'other':>7s} {'right ab':>9s} "
          f"{'right c':>8s}")
    for m in methods:
        o = np.array(outcome[m])
        ab = np.array([r["type"] == "ab" for r in rows])
        print(f"{labels[m]:30s} {np.mean(o == 'right'):7.1%} {np.mean(o == 'alias'):9.1%} "
              f"{np.mean(o == 'half/double'):9.1%} {np.mean(o == 'other'):7.1%} "
              f"{np.mean(o[ab] == 'right') if ab.any() else np.nan:9.1%} "
              f"{np.mean(o[~ab] == 'right') if (~ab).any() else np.nan:8.1%}")
    share = {m: (np.mean(np.array(outcome[m]) == "right"), np.mean(np.array(outcome[m]) == "alias"))
             for m in methods}
    print(f"stars={len(rows)} multiband_s={multi_s.sum():.2f} single_s={single_s.sum():.2f} cost_ratio={ratio:.2f} "
          + " ".join(f"{m}_ok={share[m][0]:.3f}" for m in ("multiband", "single", "plain"))
          + " " + " ".join(f"{m}_alias={share[m][1]:.3f}" for m in ("multiband", "single", "plain")))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--frequencies", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="nifty-ls (finufft) threads")
    ap.add_argument("--slow", action="store_true", help="also time astropy's exact cython method")
    ap.add_argument("--survey", action="store_true", help="period search cost and accuracy on Stripe-82-like RR Lyrae")
    ap.add_argument("--stars", type=int, default=100, help="--survey: number of stars")
    ap.add_argument("--seed", type=int, default=1, help="--survey: seed of the star sample")
    ap.add_argument("--band", default="r", help="--survey: the single band")
    ap.add_argument("--missing", type=float, default=0.1,
                    help="--survey: share of band-visits missing (0.8: about one band a visit)")
    ap.add_argument("--legacy", type=int, default=0, help="--survey: time astropy's flexible multiband on N stars")
    args = ap.parse_args(argv)
    if args.survey:
        return survey(args)

    import nifty_ls
    from astropy.timeseries import LombScargle

    rng = np.random.default_rng(1)
    n, m = args.points, args.frequencies
    t = np.sort(rng.uniform(0, 30, n))
    y = 0.1 * np.sin(2 * np.pi * t / 0.61) + rng.normal(0, 0.05, n)
    dy = np.full(n, 0.05)
    fmin, fmax = 1 / 30, 50.0
    freq = np.linspace(fmin, fmax, m)
    ls = LombScargle(t, y, dy)

    rows = []
    t_fast, p_fast = _best(lambda: ls.power(freq, method="fast", assume_regular_frequency=True), args.repeat)
    rows.append(("astropy fast", t_fast, p_fast))
    t_nifty, p_nifty = _best(lambda: ls.power(freq, method="fastnifty", assume_regular_frequency=True,
                                              method_kwds={"nthreads": args.threads}), args.repeat)
    rows.append(("astropy fastnifty (nifty-ls)", t_nifty, p_nifty))
    t_direct, res = _best(lambda: nifty_ls.lombscargle(t, y, dy, fmin=fmin, fmax=fmax, Nf=m, nthreads=args.threads),
                          args.repeat)
    rows.append(("nifty_ls.lombscargle direct", t_direct, res.power))
    reference = p_nifty
    if args.slow:
        t_slow, p_slow = _best(lambda: ls.power(freq, method="cython"), 1)
        rows.append(("astropy cython (exact)", t_slow, p_slow))
        reference = p_slow
    print(f"Lomb-Scargle, N = {n} points, M = {m} frequencies ({fmin:.3f}-{fmax:.0f} /d), best of {args.repeat}")
    print(f"{'method':32s} {'seconds':>9s} {'max |dP| vs ref':>16s} {'peak period [d]':>16s}")
    for name, sec, p in rows:
        print(f"{name:32s} {sec:9.3f} {np.max(np.abs(p - reference)):16.2e} {1 / freq[np.argmax(p)]:16.6f}")
    diff = float(np.max(np.abs(p_fast - p_nifty)))
    print(f"points={n} frequencies={m} astropy_fast_s={t_fast:.3f} nifty_s={t_nifty:.3f} "
          f"speedup={t_fast / t_nifty:.1f} max_power_diff={diff:.2e}")


if __name__ == "__main__":
    main()
