"""Upstream products made from the demo survey's truth, for tests of one stage at a time.

Importable from any test module (tests/ is on pytest's pythonpath, and on the Parsl workers' PYTHONPATH):

- calibrated frames as ``calibrate`` writes them (``calexp_for``, ``photo_calib_from_truth``,
  ``wcs_solution_from_truth``), standing in for the astrometry and photometry stages so the image-branch tests
  exercise reprojection, normalisation and co-addition alone;
- ``src`` tables as ``calibrate`` writes them for every exposure (``synth_src``) and the light curves the
  ``makeLightcurve`` task makes of them (``demo_lightcurves``): the target and its catalogue neighbours, with
  aperture-photometry noise (source + sky + read noise in the frame's seeing), scintillation for the
  telescope's aperture, a zero point that errs by a common catalogue error of the pointing plus ~0.008 mag of
  per-frame fit noise (what calibrate's few-star fits show on the demo), and a few cosmic-ray-like outliers.
  ``tests/tasks/conftest.py`` makes them once per session (fixture ``truth_lightcurves``).
"""

from __future__ import annotations

import math

import numpy as np
from astropy.io import fits
from astropy.table import Table

from openastro_parsl.datastore.image import MASK_BITS, Image
from openastro_parsl.tasks.lightcurve import LightcurveTask

RAW_RUN = "raw/all"
APERTURE_M = {"lco1m": 1.0, "slt40": 0.4, "ota80": 0.08}


# ---------------------------------------------------------------------------------------------------------------
# Calibrated frames
# ---------------------------------------------------------------------------------------------------------------

def adu_zero_point(exp: dict) -> float:
    """Truth zero-point is for e-/s; a calexp's PHOTZP is for total ADU: mag = PHOTZP - 2.5 log10(ADU)."""
    return exp["zero_point"] + 2.5 * math.log10(exp["exptime"] / exp["gain"])


def calexp_from_truth(raw: Image, exp: dict) -> Image:
    """A calexp as calibrate writes it: bias-free ADU, variance = max(signal,0)/gain + (rn/gain)^2, SAT mask,
    the true WCS, and header PHOTZP / MJD-MID / FWHMPIX / BAND / INSTRUME / EXPTIME."""
    adu = np.asarray(raw.data, np.float64)
    data = adu - exp["bias_adu"]
    var = np.maximum(data, 0.0) / exp["gain"] + (exp["read_noise"] / exp["gain"]) ** 2
    mask = np.where(adu >= exp["saturation_adu"], MASK_BITS["SAT"], 0).astype(np.int32)
    var[mask > 0] = np.inf  # as calibrate does for pixels it flags
    header = raw.header.copy()
    img = Image(data.astype(np.float32), header, mask, var.astype(np.float32))
    from astropy.wcs import WCS

    img.set_wcs(WCS(fits.Header(exp["wcs"])))
    h = img.header
    h["PHOTZP"] = adu_zero_point(exp)
    h["PHOTZPER"] = 0.0
    h["MJD-MID"] = exp["mjd"]
    h["FWHMPIX"] = exp["seeing_fwhm_px"]
    h["BAND"] = exp["band"]
    h["INSTRUME"] = exp["instrument"]
    h["EXPTIME"] = exp["exptime"]
    h["GAIN"] = exp["gain"]
    return img


def photo_calib_from_truth(exp: dict, shape) -> dict:
    """photoCalib as calibrate writes it: ``zp`` for e-/s (the truth's convention), not for ADU."""
    return {"zp": exp["zero_point"], "zp_err": 0.0, "colour_term": exp["colour_term"], "band": exp["band"],
            "instrument": exp["instrument"], "exposure": exp["exposure"], "mjd_mid": exp["mjd"],
            "fwhm_pix": exp["seeing_fwhm_px"], "pixel_scale_arcsec": None, "shape": list(shape)}


def wcs_solution_from_truth(exp: dict) -> dict:
    return {"status": "header" if exp["has_wcs"] else "solved", "engine": "truth", "reason": "", "rms_pix": 0.0,
            "n_matched": 0, "n_sources": 0, "pixel_scale_arcsec": None, "wcs": dict(exp["wcs"])}


def truth_exposures(demo, *, instrument=None, band=None, field="demo1"):
    return [e for e in demo.truth["exposures"] if e["field"] == field
            and (instrument is None or e["instrument"] == instrument) and (band is None or e["band"] == band)]


def calexp_for(demo, exp: dict) -> Image:
    raw = demo.butler.get("raw", {"instrument": exp["instrument"], "exposure": exp["exposure"]},
                          collections=RAW_RUN)
    return calexp_from_truth(raw, exp)


# ---------------------------------------------------------------------------------------------------------------
# Source tables and light curves
# ---------------------------------------------------------------------------------------------------------------

def _scintillation(d_m, airmass, height_m, exptime):
    """Young (1967) scintillation (fractional), with the usual 1.5x empirical factor."""
    return 1.5 * 0.09 * (d_m * 100) ** (-2 / 3) * airmass ** 1.75 * math.exp(-height_m / 8000.0) / math.sqrt(2 * exptime)


def synth_src(truth, seed=0, outlier_rate=0.02, neighbour_radius_arcsec=60.0):
    """One src Table per exposure (plus its data ID), as calibrate would write it, and the injected outliers.

    Returns (tables, data_ids, injected) with injected = {(target, instrument, exposure): delta_mag}.
    """
    from openastro_parsl.sim.instruments import SITES

    rng = np.random.default_rng(seed)
    targets = {t["name"]: t for t in truth["targets"]}
    stars = truth["stars"]
    sra = np.array([s["ra"] for s in stars])
    sdec = np.array([s["dec"] for s in stars])
    # the pointing's zero point carries the catalogue error of its comparison stars: fixed per (instrument, band)
    zp_bias = {(i, b): rng.normal(0, 0.004) for i in truth["instruments"] for b in "gr"}
    tables, ids, injected = [], [], {}
    for e in truth["exposures"]:
        site = SITES[e["site"]]
        inst, band = e["instrument"], e["band"]
        fwhm, sky, rn = e["seeing_fwhm_px"], e["sky_e_per_px"], e["read_noise"]
        npix = math.pi * (1.5 * fwhm) ** 2
        scint = _scintillation(APERTURE_M[inst], e["airmass"], site.height_m, e["exptime"])
        zp_est = e["zero_point"] + zp_bias[(inst, band)] + rng.normal(0, 0.008)
        rows = []
        for name, rec in e["targets"].items():
            if not (rec["in_frame"] and rec["present"]):
                continue
            tg = targets[name]
            rows.append((name, tg["ra"], tg["dec"], rec["counts_e"], tg.get("refcat_id") or -1))
            near = np.hypot((sra - tg["ra"]) * math.cos(math.radians(tg["dec"])), sdec - tg["dec"]) * 3600
            for j in np.flatnonzero((near < neighbour_radius_arcsec) & (near > 0.5)):
                s = stars[j]
                if s["target"]:
                    continue
                m = s[band] + e["colour_term"] * (s["g"] - s["r"])
                rows.append((None, s["ra"], s["dec"], e["exptime"] * 10 ** (-0.4 * (m - e["zero_point"])), s["id"]))
        seen, out = set(), []
        for name, ra, dec, counts, rid in rows:
            if (round(ra, 7), round(dec, 7)) in seen:
                continue
            seen.add((round(ra, 7), round(dec, 7)))
            var = counts + npix * (sky + rn**2) + (scint * counts) ** 2
            flux = counts + rng.normal(0, math.sqrt(var))
            err = math.sqrt(var)
            if flux < 5 * err:  # not detected
                continue
            mag = -2.5 * math.log10(flux / e["exptime"]) + zp_est
            if name is not None and rng.uniform() < outlier_rate:
                delta = -rng.uniform(0.08, 0.4) * rng.choice([1, 1, -1])
                mag += delta
                injected[(name, inst, e["exposure"])] = delta
            pos_err = 0.1 / 3600
            out.append((ra + rng.normal(0, pos_err), dec + rng.normal(0, pos_err), flux, err, flux / err,
                        mag, 2.5 / math.log(10) * err / flux, rid))
        cols = list(zip(*out, strict=True)) if out else [[]] * 8
        t = Table([np.array(c, dtype=float) for c in cols[:7]] + [np.array(cols[7], dtype=np.int64)],
                  names=["ra", "dec", "flux", "flux_err", "snr", "mag", "mag_err", "refcat_id"])
        t["x"] = np.zeros(len(t))
        t["y"] = np.zeros(len(t))
        t.meta.update({"mjd_mid": e["mjd"], "exptime": e["exptime"], "band": band, "instrument": inst,
                       "site_lat": site.lat, "site_lon": site.lon, "site_elev": site.height_m, "zp": zp_est,
                       "zp_err": 0.006, "colour_term": e["colour_term"]})
        tables.append(t)
        ids.append({"instrument": inst, "exposure": e["exposure"], "band": band, "field": e["field"]})
    return tables, ids, injected


def refcat_table(truth, seed=1):
    """The catalogue as the demo writes it: truth + catalogue errors (only what the colour needs)."""
    rng = np.random.default_rng(seed)
    stars = truth["stars"]
    return Table({"id": [s["id"] for s in stars], "ra": [s["ra"] for s in stars], "dec": [s["dec"] for s in stars],
                  "g": [s["g"] + rng.normal(0, 0.01) for s in stars], "r": [s["r"] + rng.normal(0, 0.01) for s in stars]})


def demo_lightcurves(truth, seed=0):
    """{(target, band): lightcurve Table} for the demo's non-transient targets, and the injected outliers."""
    tables, ids, injected = synth_src(truth, seed=seed)
    refcat = refcat_table(truth)
    task = LightcurveTask()
    out = {}
    for tg in truth["targets"]:
        if tg["kind"] == "transient":
            continue
        for band in "gr":
            sel = [i for i, d in enumerate(ids) if d["band"] == band and d["field"] == tg["field"]]
            res = task.run(src=[tables[i] for i in sel], refcat=refcat,
                           records={"target": {"name": tg["name"], "ra": tg["ra"], "dec": tg["dec"],
                                               "kind": tg["kind"], "field": tg["field"]}},
                           data_ids={"src": [ids[i] for i in sel]}, data_id={"target": tg["name"], "band": band})
            out[(tg["name"], band)] = res["lightcurve"]
    return out, injected
