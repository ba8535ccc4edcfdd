"""ISR against the raw-mode survey's truth: after bias, dark, flat and gain the star fluxes are the truth's.

Measurement (the same for every frame): bright isolated stars (predicted S/N >= 100 in the aperture, no
other star within 7 FWHM brighter than 0.1 % of it, no BAD or SAT pixel within 7 FWHM, at least 12 FWHM from
the edges), the aperture sum within 4 FWHM of the true position (true WCS) minus the truth's sky per pixel
(an annulus median is biased by the faint stars of a crowded field by ~1 %), divided by the truth's electrons
times the Moffat's enclosed fraction at 4 FWHM. Over up to 40 frames of each camera, per seed (two seeds),
the median ratio must be within 0.5 % of 1 (seeds 5 and 11: see the printed figures), its robust scatter
under 1.5 %.
The same measurement without the flat (bias, dark and gain only) scatters several times more: the
vignetting and dust donuts are real and the flat takes them out.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from openastro_parsl.astro.wcs import wcs_from_cards
from openastro_parsl.datastore.formatters import formatter_named
from openastro_parsl.sim.survey import generate_survey
from openastro_parsl.tasks.calibration import (
    IsrTask,
    MasterBiasTask,
    MasterDarkTask,
    MasterFlatTask,
    detector_info,
    robust_sigma,
)
from openastro_parsl.testing import run_task

FRAMES_PER_INSTRUMENT = 40
SEEDS = (5, 11)


def _read(path: Path):
    return formatter_named("fits-image").read(path)


def _kind(header) -> str | None:
    value = str(header.get("OBSTYPE", header.get("IMAGETYP", ""))).lower()
    for key, kind in (("bias", "bias"), ("dark", "dark"), ("flat", "flat")):
        if key in value:
            return kind
    return None


def _masters(raw_dir: Path, truth: dict, instrument: str) -> dict:
    files = [raw_dir / r["file"] for r in truth["raw_mode"]["calibration_frames"] if r["instrument"] == instrument]
    frames: dict[str, list] = {"bias": [], "dark": [], "flat": []}
    bands: list[str | None] = []
    for f in files:
        im = _read(f)
        kind = _kind(im.header)
        frames[kind].append(im)
        if kind == "flat":
            bands.append(next(r["band"] for r in truth["raw_mode"]["calibration_frames"] if r["file"] == f.name))
    bias = run_task(MasterBiasTask, frames=frames["bias"])["masterBias"]
    dark = run_task(MasterDarkTask, frames=frames["dark"], masterBias=bias)["masterDark"]
    flats = {}
    for band in sorted({b for b in bands if b}):
        sel = [im for im, b in zip(frames["flat"], bands, strict=True) if b == band]
        flats[band] = run_task(MasterFlatTask, frames=sel, masterBias=bias, masterDark=dark)["masterFlat"]
    return {"bias": bias, "dark": dark, "flat": flats}


def _enclosed(radius: float, fwhm: float, beta: float) -> float:
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    return 1.0 - (1.0 + (radius / alpha) ** 2) ** (1.0 - beta)


def _ratios(image: np.ndarray, mask: np.ndarray | None, exposure: dict, stars: list[dict], shape) -> list[float]:
    """measured / true electrons for the frame's bright isolated stars (see the module docstring)."""
    fwhm, beta = exposure["seeing_fwhm_px"], exposure["psf"]["beta"]
    band, ct, zp, t = exposure["band"], exposure["colour_term"], exposure["zero_point"], exposure["exptime"]
    w = wcs_from_cards(exposure["wcs"])
    field = [s for s in stars if s["field"] == exposure["field"]]
    ra = np.array([s["ra"] for s in field])
    dec = np.array([s["dec"] for s in field])
    x, y = w.wcs_world2pix(ra, dec, 0)
    mag = np.array([s[band] for s in field])
    counts = t * 10 ** (-0.4 * (mag + ct * (np.array([s["g"] - s["r"] for s in field])) - zp))
    ny, nx = shape
    r_ap, r_out = 4.0 * fwhm, 7.0 * fwhm
    sky = exposure["sky_e_per_px"] + exposure["read_noise"] ** 2
    yy, xx = np.mgrid[0:ny, 0:nx]
    out = []
    for i in np.argsort(-counts):
        noise = np.sqrt(counts[i] + np.pi * r_ap ** 2 * sky)
        if field[i]["target"] or noise > 0.01 * counts[i]:  # S/N 100 or more
            continue
        if not (12 * fwhm < x[i] < nx - 12 * fwhm and 12 * fwhm < y[i] < ny - 12 * fwhm):
            continue
        d = np.hypot(x - x[i], y - y[i])
        if np.any((d > 0) & (d < r_out) & (counts > 1e-3 * counts[i])):
            continue
        y0, y1 = int(y[i] - r_out - 2), int(y[i] + r_out + 3)
        x0, x1 = int(x[i] - r_out - 2), int(x[i] + r_out + 3)
        r = np.hypot(xx[y0:y1, x0:x1] - x[i], yy[y0:y1, x0:x1] - y[i])
        cut = image[y0:y1, x0:x1].astype(np.float64)
        ap = r <= r_ap
        if mask is not None and np.any(mask[y0:y1, x0:x1][r <= r_out] != 0):
            continue
        flux = cut[ap].sum() - exposure["sky_e_per_px"] * ap.sum()  # the true sky: no crowding bias
        out.append(flux / (counts[i] * _enclosed(r_ap, fwhm, beta)))
    return out


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """Per seed: ratios after ISR and after bias + dark + gain only (no flat), over every camera."""
    result = {}
    for seed in SEEDS:
        out = tmp_path_factory.mktemp(f"raw{seed}")
        generate_survey(out, seed=seed, size="small", raw_mode=True)
        truth = json.loads((out / "truth.json").read_text())
        isr, noflat = [], []
        for instrument in ("lco1m", "slt40", "ota80"):
            m = _masters(out / "raw", truth, instrument)
            exposures = [e for e in truth["exposures"] if e["instrument"] == instrument][:FRAMES_PER_INSTRUMENT]
            for e in exposures:
                raw = _read(out / "raw" / e["file"])
                post = run_task(IsrTask, config={"instruments": [instrument]}, raw=raw, masterBias=m["bias"],
                                masterDark=m["dark"], masterFlat=m["flat"][e["band"]])["postIsrImage"]
                isr += _ratios(post.data, post.mask, e, truth["stars"], post.data.shape)
                det = detector_info(raw.header, raw.data)
                plain = (raw.data - m["bias"].data - m["dark"].data * det.exptime) * det.gain
                noflat += _ratios(plain, post.mask, e, truth["stars"], plain.shape)
        result[seed] = (np.array(isr), np.array(noflat))
    return result


@pytest.mark.parametrize("seed", SEEDS)
def test_isr_star_fluxes_match_truth_to_half_a_percent(measured, seed):
    isr, _ = measured[seed]
    assert len(isr) >= 30, len(isr)
    median, scatter = float(np.median(isr)), robust_sigma(isr)
    print(f"seed {seed}: {len(isr)} stars, median ratio {median:.4f}, robust scatter {scatter:.4f}")
    assert abs(median - 1.0) < 0.005, (median, scatter)
    assert scatter < 0.015, scatter


@pytest.mark.parametrize("seed", SEEDS)
def test_without_the_flat_the_fluxes_scatter_with_the_vignetting(measured, seed):
    isr, noflat = measured[seed]
    print(f"seed {seed}: robust scatter {robust_sigma(isr):.4f} after ISR, {robust_sigma(noflat):.4f} without the flat")
    assert robust_sigma(noflat) > 3 * robust_sigma(isr), (robust_sigma(noflat), robust_sigma(isr))
