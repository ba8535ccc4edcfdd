"""Co-addition and reprojection kernels: time and peak memory, tiled under a cap vs the whole stack in memory.

Frames are synthetic (sky noise of varying depth, stars, a cosmic ray each, NO_DATA edges) written as .npy
planes on disk. The *chunked* run reads them lazily tile by tile (``NpyFrame``) under ``--cap-mb``; the
*in-memory* run loads every frame and co-adds in one tile, which is what a stack without tiling costs. Each
run is its own process so its peak RSS (``ru_maxrss``) is its own; the traced peak (``tracemalloc``, numpy
buffers included) is the kernel's working memory. Results of the two runs are compared pixel by pixel.
Reprojection: seconds per frame for ``WarpTask``'s kernel onto a rotated, shifted grid of the same size.

    python benchmarks/coadd.py                         # 100 frames of 2048 x 2048, cap 1024 MB
    python benchmarks/coadd.py --frames 20 --size 512  # quick

The in-memory run is skipped (its estimate printed) when it would need more than --max-inmem-gb.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BYTES_DISK = 4 + 4 + 1  # float32 data + float32 variance + uint8 mask per pixel


def make_frames(outdir: Path, n: int, size: int, seed: int = 1) -> None:
    """n frames of size x size as .npy planes, one frame in memory at a time."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    stars = np.zeros((size, size), np.float32)
    for a, x, y in zip(rng.uniform(20, 2000, 200), rng.uniform(0, size, 200), rng.uniform(0, size, 200), strict=True):
        r = 12
        y0, y1, x0, x1 = max(0, int(y) - r), min(size, int(y) + r), max(0, int(x) - r), min(size, int(x) + r)
        stars[y0:y1, x0:x1] += a * np.exp(-((xx[y0:y1, x0:x1] - x) ** 2 + (yy[y0:y1, x0:x1] - y) ** 2) / 8.0)
    del xx, yy
    for i in range(n):
        s = float(rng.uniform(1.0, 3.0))
        data = stars + rng.standard_normal((size, size), dtype=np.float32) * s
        mask = np.zeros((size, size), np.uint8)
        edge = int(rng.integers(0, size // 20 + 1))
        mask[:, :edge] = 16  # NO_DATA strip, as a warped frame's footprint edge
        data[:, :edge] = np.nan
        cy, cx = rng.integers(0, size - 3, 2)
        data[cy:cy + 3, cx:cx + 3] += 5000.0  # a cosmic ray
        np.save(outdir / f"f{i:04d}.data.npy", data)
        np.save(outdir / f"f{i:04d}.var.npy", np.full((size, size), s * s, np.float32))
        np.save(outdir / f"f{i:04d}.mask.npy", mask)


def run_coadd(mode: str, frames_dir: Path, n: int, cap_mb: float, out: Path) -> dict:
    """One co-add in this process (called through a subprocess for a clean peak RSS)."""
    import tracemalloc

    from openastro_parsl.datastore.image import Image
    from openastro_parsl.tasks.image.coadd_kernel import NpyFrame, coadd

    stems = [frames_dir / f"f{i:04d}" for i in range(n)]
    t0 = time.perf_counter()
    tracemalloc.start()
    if mode == "chunked":
        frames = [NpyFrame.open(s) for s in stems]
        res = coadd(frames, memory_cap_mb=cap_mb)
    else:
        frames = [Image(np.load(f"{s}.data.npy"), None, np.load(f"{s}.mask.npy"), np.load(f"{s}.var.npy"))
                  for s in stems]
        t_load = time.perf_counter() - t0
        res = coadd(frames, tile_shape=frames[0].data.shape)
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    seconds = time.perf_counter() - t0
    np.save(out / f"{mode}.image.npy", res.image)
    np.save(out / f"{mode}.variance.npy", res.variance)
    np.save(out / f"{mode}.coverage.npy", res.coverage)
    return {"mode": mode, "seconds": seconds, "load_seconds": t_load if mode != "chunked" else None,
            "traced_peak_mb": traced / 2**20, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "tiles": res.n_tiles, "tile_shape": list(res.tile_shape), "n_clipped": res.n_clipped}


def bench_warp(size: int, methods: list[str], repeats: int) -> dict:
    """Seconds per frame for warp_image (pixels + variance + mask) onto a rotated, shifted grid."""
    from astropy.io import fits
    from astropy.wcs import WCS

    from openastro_parsl.datastore.image import Image
    from openastro_parsl.tasks.image import warp_image

    rng = np.random.default_rng(2)
    w_in = WCS(naxis=2)
    w_in.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w_in.wcs.crval = [150.1, 2.2]
    w_in.wcs.crpix = [size / 2 + 0.5, size / 2 + 0.5]
    s = 0.9 / 3600
    t = np.deg2rad(37.0)
    w_in.wcs.cd = s * np.array([[-np.cos(t), np.sin(t)], [np.sin(t), np.cos(t)]])
    img = Image(rng.normal(100, 5, (size, size)).astype(np.float32), fits.Header(),
                np.zeros((size, size), np.int32), np.full((size, size), 25.0, np.float32))
    img.set_wcs(w_in)
    img.mask[10:20, 10:20] = 2  # one SAT block, so a mask plane is reprojected too
    w_out = WCS(naxis=2)
    w_out.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w_out.wcs.crval = [150.1 + 5 / 3600, 2.2 - 3 / 3600]
    w_out.wcs.crpix = [size / 2 + 0.5, size / 2 + 0.5]
    w_out.wcs.cdelt = [-0.8 / 3600, 0.8 / 3600]
    warp_image(img, w_out, (size, size), method="interp")  # warm-up: imports, caches
    out = {}
    for m in methods:  # "interp-noroundtrip": WarpTask's roundtrip_coords=False
        method, _, opt = m.partition("-")
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            warp_image(img, w_out, (size, size), method=method, roundtrip=opt != "noroundtrip")
            times.append(time.perf_counter() - t0)
        out[m] = min(times)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--size", type=int, default=2048, help="frame side (pixels)")
    ap.add_argument("--cap-mb", type=float, default=1024.0, help="memory cap of the chunked run")
    ap.add_argument("--max-inmem-gb", type=float, default=8.0, help="skip the in-memory run above this estimate")
    ap.add_argument("--warp-methods", default="interp,interp-noroundtrip,adaptive,exact")
    ap.add_argument("--warp-size", type=int, default=None, help="frame side for the reprojection timing "
                    "(default: --size)")
    ap.add_argument("--warp-repeats", type=int, default=1)
    ap.add_argument("--workdir", default=None, help="where to write the frames (default: a temporary directory)")
    ap.add_argument("--_run", nargs=4, metavar=("MODE", "DIR", "N", "CAP"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._run:
        mode, d, n, cap = args._run
        print(json.dumps(run_coadd(mode, Path(d), int(n), float(cap), Path(d))))
        return 0

    from openastro_parsl.tasks.image.coadd_kernel import BYTES_PER_SAMPLE

    n, size = args.frames, args.size
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        d = Path(tmp)
        t0 = time.perf_counter()
        make_frames(d, n, size)
        print(f"frames: {n} x {size}x{size} written in {time.perf_counter() - t0:.1f} s "
              f"({n * size * size * BYTES_DISK / 2**30:.2f} GB on disk)", flush=True)
        inmem_gb = n * size * size * (BYTES_PER_SAMPLE + BYTES_DISK) / 2**30
        results = {}
        modes = ["chunked"] + (["in-memory"] if inmem_gb <= args.max_inmem_gb else [])
        for mode in modes:
            cmd = [sys.executable, __file__, "--_run", mode, str(d), str(n), str(args.cap_mb)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            results[mode] = r
            extra = f", of which loading {r['load_seconds']:.1f} s" if r["load_seconds"] is not None else ""
            print(f"coadd {mode:9s}: {r['seconds']:7.1f} s{extra}; traced peak {r['traced_peak_mb']:8.1f} MB, "
                  f"max RSS {r['maxrss_mb']:8.1f} MB; {r['tiles']} tile(s) of {r['tile_shape']}, "
                  f"{r['n_clipped']} samples clipped", flush=True)
        if "in-memory" not in results:
            print(f"coadd in-memory: skipped, estimated {inmem_gb:.1f} GB > --max-inmem-gb {args.max_inmem_gb:g}")
        else:
            a = {k: np.load(d / f"chunked.{k}.npy") for k in ("image", "variance", "coverage")}
            b = {k: np.load(d / f"in-memory.{k}.npy") for k in ("image", "variance", "coverage")}
            same_nan = np.array_equal(np.isnan(a["image"]), np.isnan(b["image"]))
            diff = float(np.nanmax(np.abs(a["image"] - b["image"])))
            print(f"chunked vs in-memory: max |diff| image {diff:.3g}, variance "
                  f"{float(np.nanmax(np.abs(a['variance'] - b['variance']))):.3g}, coverage equal "
                  f"{np.array_equal(a['coverage'], b['coverage'])}, NaNs equal {same_nan}")
        under = results["chunked"]["traced_peak_mb"] <= args.cap_mb
        print(f"cap {args.cap_mb:g} MB respected (traced): {under}")
    ws = args.warp_size or size
    methods = [m for m in args.warp_methods.split(",") if m]
    if methods:
        per = bench_warp(ws, methods, args.warp_repeats)
        print("reprojection s/frame at " + f"{ws}x{ws}: " + ", ".join(f"{m} {t:.2f}" for m, t in per.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
