"""Labelled training sets: simulated pairs through the production ``diffim``, candidates labelled real or bogus
(and which kind of bogus) from what was injected where."""

from __future__ import annotations

import math
import time

import numpy as np

from ....pipeline.task import NoWorkFound
from .. import realbogus as rb
from ..diffim import difference_image
from .simulate import KIND_CODE, Conditions, SimPair, simulate_pair

__all__ = ["build_training_set", "label_candidates"]


def label_candidates(pair: SimPair, cands, fwhm: float) -> tuple[np.ndarray, np.ndarray]:
    """(label 1 real / 0 bogus, kind code) per candidate, from what was injected where."""
    n = len(cands)
    labels = np.zeros(n, np.int64)
    kinds = np.full(n, KIND_CODE["noise"], np.int64)
    if n == 0:
        return labels, kinds
    x, y = np.asarray(cands["x"], float), np.asarray(cands["y"], float)
    pos = np.asarray(cands["flux"], float) > 0
    r_real = max(1.5, 0.6 * fwhm)
    flags = np.asarray(cands["flags"])
    for i in range(n):
        if len(pair.real):
            d = np.hypot(pair.real[:, 0] - x[i], pair.real[:, 1] - y[i])
            j = int(np.argmin(d))
            if d[j] <= r_real and (pair.real[j, 2] > 0) == pos[i]:
                labels[i] = 1
                kinds[i] = KIND_CODE["real"]
                continue
        kind = None
        best = 3.0
        for k, ax, ay in pair.artefacts:
            dd = math.hypot(ax - x[i], ay - y[i])
            if dd < best + (3.0 if k == "cosmic_ray" else 0.0):
                kind, best = k, dd
        if kind is None:
            for (x0, y0, ang) in pair.trails:
                if abs(-(x[i] - x0) * math.sin(ang) + (y[i] - y0) * math.cos(ang)) < 2.0 * fwhm:
                    kind = "trail"
        if kind is None and len(pair.stars_xy):
            ds = np.hypot(pair.stars_xy[:, 0] - x[i], pair.stars_xy[:, 1] - y[i])
            if ds.min() < 2.5 * fwhm:
                kind = "dipole" if pair.misaligned else "star_residual"
        if kind is None and flags[i] & 3:
            kind = "edge"
        kinds[i] = KIND_CODE[kind or "noise"]
    return labels, kinds


def build_training_set(seed: int, n_frames: int, cond: Conditions = Conditions(), *, stamp_size: int = rb.STAMP_SIZE,
                       log=None) -> dict[str, np.ndarray]:
    """Simulate ``n_frames`` pairs, run diffim on each, label its candidates; deterministic in ``seed``.

    Returns ``stamps`` (N, 3, S, S) float16 (model input, see ``realbogus.prepare_stamps``), ``label``,
    ``kind`` (index into ("real",) + BOGUS_KINDS), ``snr``, ``frame``.
    """
    out = {"stamps": [], "label": [], "kind": [], "snr": [], "frame": []}
    t0 = time.perf_counter()
    for i in range(n_frames):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), i]))
        pair = simulate_pair(rng, cond)
        try:
            _, cands, cutouts, res = difference_image(pair.science, pair.template, stamp_size=stamp_size,
                                                      noise_seed=i, saturation=pair.info["saturation"])
        except NoWorkFound:
            continue
        labels, kinds = label_candidates(pair, cands, res.psf_fwhm)
        if len(cands):
            out["stamps"].append(rb.prepare_stamps(cutouts, stamp_size).astype(np.float16))
            out["label"].append(labels)
            out["kind"].append(kinds)
            out["snr"].append(np.asarray(cands["snr"], float))
            out["frame"].append(np.full(len(cands), i, np.int64))
        if log is not None and (i + 1) % 50 == 0:
            log(f"  {i + 1}/{n_frames} frames, {sum(len(v) for v in out['label'])} candidates, "
                f"{time.perf_counter() - t0:.0f} s")
    if not out["label"]:
        raise ValueError("the simulated frames produced no candidates")
    return {k: np.concatenate(v) for k, v in out.items()}
