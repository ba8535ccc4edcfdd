"""Plate solving on the demo survey: solve rate, accuracy against the true WCS and seconds per frame, for
the astrometry.net engine and the built-in quad matcher side by side.

Every good frame of a freshly generated survey (in a temporary directory) is solved from its pixels with
the header WCS ignored (``trust_header_wcs: false``), so the frames that carry one count too; the frames
the survey wrote without a WCS are also reported apart. Accuracy is the RMS, in pixels, between where the
solved and the true WCS put the catalogue stars on the frame.

    python benchmarks/plate_solve.py --size small       # ~120 frames
    python benchmarks/plate_solve.py --size medium --engines builtin

The index cache for astrometry.net lives in the temporary directory, so its one-off build time is included
in the first frame (and printed separately).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _load_frames(survey: Path):
    from astropy.io import fits
    from astropy.table import Table

    from openastro_parsl.datastore.image import Image

    truth = json.loads((survey / "truth.json").read_text())
    refcat = Table.read(survey / "refcat.ecsv", format="ascii.ecsv")
    frames = []
    for e in truth["exposures"]:
        with fits.open(survey / "raw" / e["file"]) as hdul:
            image = Image(hdul[0].data.astype("float32"), hdul[0].header.copy())
        rows = refcat[refcat["field"] == e["field"]] if "field" in refcat.colnames else refcat
        frames.append((e, image, rows))
    return frames


def run_engine(engine: str, frames, cache_dir: Path) -> dict:
    from openastro_parsl.astro.wcs import wcs_from_cards
    from openastro_parsl.tasks.astrometry import Catalogue, PlateSolveConfig, PlateSolveTask, wcs_difference_rms

    task = PlateSolveTask(PlateSolveConfig(engine=engine, trust_header_wcs=False, index_cache_dir=str(cache_dir)))
    rows = []
    for e, image, refcat in frames:
        t0 = time.perf_counter()
        rec = task.run(raw=image, refcat=refcat)["solution"]
        dt = time.perf_counter() - t0
        rms = None
        if rec["status"] == "solved":
            rms, _ = wcs_difference_rms(wcs_from_cards(rec["wcs"]), wcs_from_cards(e["wcs"]),
                                        Catalogue.from_table(refcat), image.shape)
        rows.append({"file": e["file"], "instrument": e["instrument"], "has_wcs": e["has_wcs"],
                     "status": rec["status"], "rms_truth": rms, "seconds": dt, "reason": rec["reason"]})
    return _summary(rows)


def _summary(rows: list[dict]) -> dict:
    solved = [r for r in rows if r["status"] == "solved"]
    secs = [r["seconds"] for r in rows]
    rms = [r["rms_truth"] for r in solved]
    nowcs = [r for r in rows if not r["has_wcs"]]
    per_inst = {}
    for inst in sorted({r["instrument"] for r in rows}):
        mine = [r for r in rows if r["instrument"] == inst]
        ok = [r for r in mine if r["status"] == "solved"]
        per_inst[inst] = {"solved": len(ok), "frames": len(mine),
                          "max_rms": max((r["rms_truth"] for r in ok), default=None),
                          "s_per_frame": statistics.mean(r["seconds"] for r in mine)}
    return {
        "frames": len(rows), "solved": len(solved),
        "no_wcs_frames": len(nowcs), "no_wcs_solved": sum(r["status"] == "solved" for r in nowcs),
        "median_rms": statistics.median(rms) if rms else None, "max_rms": max(rms) if rms else None,
        "s_per_frame": statistics.mean(secs), "s_first_frame": secs[0] if secs else None,
        "s_per_frame_after_first": statistics.mean(secs[1:]) if len(secs) > 1 else None,
        "s_median": statistics.median(secs), "s_max": max(secs),
        "per_instrument": per_inst,
        "failures": [{"file": r["file"], "reason": r["reason"]} for r in rows if r["status"] != "solved"][:10],
    }


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["small", "medium"], default="small")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--engines", default="astrometry_net,builtin",
                    help="comma-separated: astrometry_net, builtin")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    from openastro_parsl.sim.survey import generate_survey
    from openastro_parsl.tasks.astrometry import net as astrometry_net

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if "astrometry_net" in engines and not astrometry_net.available():
        print("solve-field not on PATH (run bin/install-astrometry); astrometry_net skipped", file=sys.stderr)
        engines.remove("astrometry_net")
    with tempfile.TemporaryDirectory(prefix="plate-solve-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        generate_survey(tmp / "survey", seed=args.seed, size=args.size)
        frames = _load_frames(tmp / "survey")
        print(f"demo survey size={args.size} seed={args.seed}: {len(frames)} frames "
              f"({sum(not e['has_wcs'] for e, _, _ in frames)} without a header WCS), made in "
              f"{time.perf_counter() - t0:.1f} s")
        results = {e: run_engine(e, frames, tmp / "index-cache") for e in engines}

    cols = list(results)
    print(f"\n{'':28s}" + "".join(f"{c:>18s}" for c in cols))
    lines = [
        ("solved / frames", lambda r: f"{r['solved']}/{r['frames']}"),
        ("solve rate", lambda r: f"{100.0 * r['solved'] / max(r['frames'], 1):.1f}%"),
        ("no-WCS frames solved", lambda r: f"{r['no_wcs_solved']}/{r['no_wcs_frames']}"),
        ("median RMS vs truth (px)", lambda r: _fmt(r["median_rms"], ".3f")),
        ("max RMS vs truth (px)", lambda r: _fmt(r["max_rms"], ".3f")),
        ("s / frame (mean)", lambda r: _fmt(r["s_per_frame"], ".3f")),
        ("s / frame (median)", lambda r: _fmt(r["s_median"], ".3f")),
        ("s / frame (max)", lambda r: _fmt(r["s_max"], ".3f")),
        ("s first frame (index)", lambda r: _fmt(r["s_first_frame"], ".3f")),
    ]
    for label, f in lines:
        print(f"{label:28s}" + "".join(f"{f(results[c]):>18s}" for c in cols))
    insts = sorted({i for r in results.values() for i in r["per_instrument"]})
    for inst in insts:
        cells = []
        for c in cols:
            p = results[c]["per_instrument"].get(inst)
            cells.append("-" if p is None else f"{p['solved']}/{p['frames']} {p['s_per_frame']:.2f}s")
        print(f"{'  ' + inst + ' solved, s/frame':28s}" + "".join(f"{x:>18s}" for x in cells))
    for c in cols:
        for fail in results[c]["failures"]:
            print(f"  {c} failed {fail['file']}: {fail['reason']}")
    summary = " ".join(f"{c}: rate={results[c]['solved']}/{results[c]['frames']} "
                       f"max_rms={_fmt(results[c]['max_rms'], '.3f')} s_per_frame={results[c]['s_per_frame']:.3f}"
                       for c in cols)
    print(f"\nsize={args.size} {summary}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if all(r["solved"] == r["frames"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
