"""How close the field calibration's zero-points come to what the catalogue allows, sky by sky.

Issue 14 item 7 asks for at most 2 % of frames beyond 0.02 mag of the truth on every seed. Whether any estimator
can meet that depends on the sky: the zero-point is defined at g-r = 0, ~0.65 mag of colour from the stars, so it
rests on the catalogue's magnitude and colour scales over the few stars the frames see (28-29 of the small demo
survey's 375), and their catalogue errors (0.01-0.03 mag) never average down over frames.

For each seed this makes the small demo survey, runs the calibration subset through Parsl (as
``tests/execution/test_zeropoints_seeds.py`` does) and compares three things against the simulator's truth:

* ``pipeline``: the zero-points ``zeropointHistory`` reports (``zp_pooled``, from the field fit);
* ``ideal``: the same joint fit (``ubercal.fit_field``, same stars, same frames, same weights) given perfect
  instrumental photometry -- each measurement is exactly true magnitude + true colour term x true colour - true
  zero-point -- and the survey's real catalogue: what is left is the catalogue's doing alone;
* ``P(ideal holds)``: the fraction of ``--draws`` catalogues (truth + N(0, quoted error), the simulator's own
  model) on which that ideal fit has at most 2 % of frames beyond 0.02 mag: how often the criterion can hold on a
  sky like this one, whatever the instrumental photometry.

    python benchmarks/zeropoint_limit.py --seeds 42 3 5 7 11 --draws 100
    python benchmarks/zeropoint_limit.py --seeds 31 7 -c calibrate:apcorr_model_error=0.0001   # a variant
    python benchmarks/zeropoint_limit.py --seeds 3 7 --known-colour-terms 0.01   # as a standard field gives

``--standard-field`` makes each survey with its standard-field night (``openastro-demo --standard-field``),
calibrates the standard field alone, pools its colour terms and gives them to ``fieldCalibration`` of the science
field, as ``bin/demo`` does: no truth involved.

``--known-colour-terms SIGMA`` gives ``fieldCalibration`` each camera's colour terms as known (config
``colour_terms``): the simulator's true ones plus N(0, SIGMA), quoted as +- SIGMA, what a standard-field night
measuring them to SIGMA would give (``openastro-butler colour-terms``).

One line per seed: seed=S frames=N pipeline_beyond=K pipeline_max=X ideal_beyond=K ideal_max=X p_ideal_holds=P
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STANDARD_RUN = "bench/standards"
RUN = "bench/zeropoints"


def calibrate(root: Path, seed: int, overrides: tuple[str, ...] = (), *, size: str = "small", run: str = RUN,
              standard_field: bool = False, where: str = ""):
    """The demo survey of ``seed`` made under ``root`` and its calibration subset run through Parsl into ``run``."""
    from openastro_parsl.demo import make_demo_repo
    from openastro_parsl.execution.site import load_site
    from openastro_parsl.execution.submit import Submission
    from openastro_parsl.graph.planner import Planner
    from openastro_parsl.pipeline.pipeline import load_pipeline

    demo = make_demo_repo(root / f"seed{seed}", seed=seed, size=size, standard_field=standard_field)
    pipeline = load_pipeline(f"{ROOT / 'pipelines' / 'image.yaml'}#calibration", overrides)
    graph = Planner(demo.butler, pipeline, inputs=["demo/defaults"], output_run=run, where=where).plan()
    site, src = load_site(None)
    if not Submission.start(demo.butler, graph, site, src).run().ok:
        sys.exit(f"seed {seed}: the calibration run failed (see {root})")
    return demo


def standard_colour_terms(root: Path, seed: int, overrides: tuple[str, ...] = ()) -> dict[str, list[float]]:
    """The colour terms the survey's own standard field gives, as ``bin/demo`` measures them: the standard field
    calibrated alone, its colour terms pooled (``openastro-butler colour-terms``)."""
    from openastro_parsl.sim.sky import STANDARD_FIELD
    from openastro_parsl.tasks.photometry.colour_terms import pool_colour_terms

    demo = calibrate(root, seed, overrides, run=STANDARD_RUN, standard_field=True,
                     where=f"field = '{STANDARD_FIELD.name}'")
    refs = demo.butler.registry.query_datasets("fieldZeropoints", [STANDARD_RUN])
    pooled, _ = pool_colour_terms(demo.butler.get(ref) for ref in refs)
    return {p.key: [round(p.value, 4), round(p.error, 4)] for p in pooled}


def pipeline_misses(demo) -> dict[tuple[str, int], float]:
    """(instrument, exposure) -> zp_pooled - truth."""
    truth = {(e["instrument"], e["exposure"]): e["zero_point"] for e in demo.truth["exposures"]}
    out = {}
    for ref in demo.butler.registry.query_datasets("zeropointHistory", [RUN]):
        hist = demo.butler.get("zeropointHistory", ref.data_id, collections=RUN)
        inst = ref.data_id["instrument"]
        for r in hist:
            out[(inst, int(r["exposure"]))] = float(r["zp_pooled"]) - truth[(inst, int(r["exposure"]))]
    return out


def field_inputs(demo):
    """The field fit's own measurements, and the truth behind each: true magnitudes per star and column, true
    zero-point and colour term per frame."""
    from openastro_parsl.tasks.photometry.fieldcal import field_measurements

    butler = demo.butler
    (field,) = [f["name"] for f in demo.truth["fields"] if not f.get("standard")]
    srcs = [butler.get("src", ref.data_id, collections=RUN) for ref in butler.registry.query_datasets("src", [RUN])]
    refcat = butler.get("refcat", {"field": field}, collections=demo.truth.get("refcat_run", "refcats"))
    m = field_measurements(srcs, refcat)
    stars = {int(s["id"]): s for s in demo.truth["stars"]}
    columns = [m.colour_index.split("-")[0], m.colour_index.split("-")[1]]
    columns += [c for c in ("g", "r") if c not in columns]
    true_mag = np.array([[stars[int(i)][c] for c in columns[:m.cat_mag.shape[1]]] for i in m.star_ids])
    exp = {(e["instrument"], e["exposure"]): e for e in demo.truth["exposures"]}
    zp = np.array([exp[(i, x)]["zero_point"] for i, x, _ in m.frames])
    ct = np.array([exp[(i, x)]["colour_term"] for i, x, _ in m.frames])
    return m, true_mag, zp, ct


def ideal_misses(m, true_mag, zp, ct, cat_mag, known=None) -> np.ndarray:
    """Per frame: zero-point of the joint fit on perfect instrumental photometry - truth."""
    from openastro_parsl.tasks.photometry.fieldcal import colour_term_priors
    from openastro_parsl.tasks.photometry.ubercal import fit_field

    ct_mean, ct_sigma, _ = colour_term_priors(m.groups, m.colour_index, known or {}, "g-r", 1.0)
    colour = true_mag[:, m.blue] - true_mag[:, m.red]
    inst = true_mag[m.star, m.frame_column[m.frame]] + ct[m.frame] * colour[m.star] - zp[m.frame]
    fit = fit_field(m.frame, m.star, inst, m.inst_err, frame_group=m.frame_group, frame_column=m.frame_column,
                    cat_mag=cat_mag, cat_err=m.cat_err, blue=m.blue, red=m.red, ct_prior_mean=ct_mean,
                    ct_prior_sigma=ct_sigma)
    return fit.zp - zp


def known_colour_terms(rng, sigma: float) -> dict[str, list[float]]:
    """Every demo camera's colour terms as a standard field measuring them to ``sigma`` would give them."""
    from openastro_parsl.sim.instruments import make_instruments

    terms = {f"{name}/{band}": [round(ct + float(rng.normal(0, sigma)), 4), sigma]
             for name, inst in make_instruments("small").items() for band, ct in inst.colour_terms.items()}
    return terms


def known_overrides(terms: dict[str, list[float]]) -> list[str]:
    body = ", ".join(f"{k}: [{v}, {e}]" for k, (v, e) in terms.items())
    return [f"fieldCalibration:colour_terms={{{body}}}", "fieldCalibration:colour_terms_index=g-r"]


def holds(misses: np.ndarray) -> bool:
    return bool(np.sum(np.abs(misses) > 0.02) <= 0.02 * len(misses))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 3, 5, 7, 11])
    ap.add_argument("--draws", type=int, default=100, help="Catalogue draws per seed for P(ideal holds).")
    ap.add_argument("--root", type=Path, default=None, help="Where the surveys go (default: a temporary folder).")
    ap.add_argument("-c", "--config", action="append", default=[], metavar="LABEL:KEY=VALUE",
                    help="A config override of the calibration subset, as openastro-plan -c takes it (repeatable).")
    given = ap.add_mutually_exclusive_group()
    given.add_argument("--known-colour-terms", type=float, metavar="SIGMA",
                       help="Give fieldCalibration the true colour terms + N(0, SIGMA), quoted as +- SIGMA.")
    given.add_argument("--standard-field", action="store_true",
                       help="Give fieldCalibration the colour terms the survey's own standard field measures.")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(20261206)
    known = known_colour_terms(rng, args.known_colour_terms) if args.known_colour_terms else None
    if known:
        args.config += known_overrides(known)
    with tempfile.TemporaryDirectory(prefix="zp_limit_") as tmp:
        root = args.root or Path(tmp)
        for seed in args.seeds:
            t0 = time.perf_counter()
            where = ""
            if args.standard_field:
                from openastro_parsl.sim.sky import STANDARD_FIELD

                known = standard_colour_terms(root, seed, tuple(args.config))
                print(f"seed {seed}: standard field colour terms " + ", ".join(
                    f"{k} {v:+.4f} +- {e:.4f}" for k, (v, e) in sorted(known.items())), flush=True)
                config, where = args.config + known_overrides(known), f"field != '{STANDARD_FIELD.name}'"
            else:
                config = args.config
            demo = calibrate(root, seed, tuple(config), standard_field=args.standard_field, where=where)
            piped = pipeline_misses(demo)
            m, true_mag, zp, ct = field_inputs(demo)
            d_pipe = np.array([piped[(i, x)] for i, x, _ in m.frames])
            d_ideal = ideal_misses(m, true_mag, zp, ct, m.cat_mag, known)
            ok = sum(holds(ideal_misses(m, true_mag, zp, ct, true_mag + rng.normal(0, 1, true_mag.shape) * m.cat_err,
                                        known))
                     for _ in range(args.draws))
            groups = sorted(set(m.groups))
            per_group = ", ".join(
                f"{i} {b} {np.mean(d_pipe[m.frame_group == k]):+.4f}/{np.mean(d_ideal[m.frame_group == k]):+.4f}"
                for k, (i, b) in enumerate(groups))
            print(f"seed {seed}: {len(m.star_ids)} stars; mean miss pipeline/ideal per instrument x band: {per_group}"
                  f" ({time.perf_counter() - t0:.0f} s)")
            print(f"seed={seed} frames={len(d_pipe)} pipeline_beyond={int(np.sum(np.abs(d_pipe) > 0.02))} "
                  f"pipeline_max={np.abs(d_pipe).max():.4f} ideal_beyond={int(np.sum(np.abs(d_ideal) > 0.02))} "
                  f"ideal_max={np.abs(d_ideal).max():.4f} p_ideal_holds={ok / args.draws:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
