"""Lomb-Scargle speed: astropy's ``fast`` (Press & Rybicki) vs nifty-ls (``fastnifty``, finufft).

N irregular times over a 30-day baseline, a sinusoid plus noise, M evenly spaced frequencies up to 50/day;
each method timed best-of-``--repeat`` through astropy's ``LombScargle.power`` (nifty-ls registers its
method with astropy on import), plus nifty-ls called directly. ``--slow`` adds astropy's exact O(N*M)
``cython`` method as the accuracy reference (about a minute at the default size).

    python benchmarks/lombscargle.py --points 10000 --frequencies 100000

Last line: points=N frequencies=M astropy_fast_s=X nifty_s=Y speedup=X/Y max_power_diff=D
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--frequencies", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="nifty-ls (finufft) threads")
    ap.add_argument("--slow", action="store_true", help="also time astropy's exact cython method")
    args = ap.parse_args(argv)

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
