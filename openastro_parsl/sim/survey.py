"""Orchestration: build the sky, plan the nights, render every frame, write truth.

Every random draw comes from a numpy Generator keyed by (seed, purpose, ...), so a
component's randomness does not shift when another component changes, and the same
seed reproduces every output byte.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..astro.jsonable import jsonable
from ..astro.wcs import wcs_from_cards
from . import asteroids as sso
from . import headers, lightcurves, planet, rawmode, render, schedule, sky
from .astro import airmass, altitude_deg, moon_illumination
from .instruments import SITES, Instrument, make_instruments

SIZES = ("small", "medium")
EXPID_BASE = {"lco1m": 1001, "slt40": 5001}
MOON_SKY = {"g": 5.0, "r": 2.5}  # sky flux multiplier at full moon minus one
SOLVABLE_MIN_STARS = 8  # a header-less frame must show at least this many refcat stars


@dataclass(frozen=True)
class SurveyManifest:
    """What generate_survey wrote (paths) and how much of it."""

    outdir: Path
    seed: int
    size: str
    raw_files: tuple[Path, ...]  # every file in raw/, corrupt ones included
    exposure_files: tuple[Path, ...]  # the good frames (truth["exposures"])
    corrupt_files: tuple[Path, ...]
    refcat: Path
    truth: Path
    n_exposures: int
    n_corrupt: int
    n_refcat: int
    exposures_per_instrument: dict[str, int] = field(default_factory=dict)
    calibration_files: tuple[Path, ...] = ()  # raw mode: the bias, dark and flat frames (also in raw/)
    orbit_file: Path | None = None  # asteroids: their orbits in MPCORB format


def _rng(seed: int, *tags) -> np.random.Generator:
    key = [int(seed) & 0xFFFFFFFFFFFFFFFF]
    for t in tags:
        key.append(t if isinstance(t, int) and t >= 0 else zlib.crc32(str(t).encode()))
    return np.random.default_rng(np.random.SeedSequence(key))


@dataclass
class _Frame:
    """Everything about one frame except its pixels."""

    plan: schedule.PlannedExposure
    inst: Instrument
    expid: int
    airmass: float
    zero_point: float
    colour_term: float
    fwhm_arcsec: float
    sky_e: float
    sky_mag: float
    wcs: dict
    rotation_deg: float
    has_wcs: bool = True
    corrupt: str | None = None
    bjd_tdb_mjd: float = float("nan")  # mid-exposure on the barycentric clock (MJD form) that the sky keeps

    @property
    def fwhm_px(self) -> float:
        return self.fwhm_arcsec / self.inst.pixel_scale


def _conditions(seed, inst: Instrument, p: schedule.PlannedExposure, expid: int) -> _Frame:
    """Atmosphere and pointing for one frame: airmass, seeing, zero point, sky, true WCS."""
    site = SITES[p.site]
    t = p.mjd_mid
    X = float(airmass(altitude_deg(p.pointing_ra, p.pointing_dec, t, site)))
    night = math.floor(t + site.lon / 360.0 - 0.5)  # local noon-to-noon
    nrng = _rng(seed, "night", inst.name, p.site, night)
    seeing_night = float(np.exp(nrng.normal(0.0, 0.18)))
    zp_night = float(nrng.normal(0.0, inst.zp_night_jitter))
    sky_night = float(nrng.normal(0.0, 0.08))
    frng = _rng(seed, "frame", inst.name, p.start_ms)
    atm = site.seeing_arcsec * seeing_night * X**0.6 * float(np.exp(frng.normal(0.0, 0.04)))
    fwhm = float(np.hypot(atm, inst.seeing_instrument))
    band = p.band
    zp = inst.zero_points[band] - inst.extinction[band] * X + zp_night + float(frng.normal(0.0, 0.004))
    illum = float(moon_illumination(t))
    mu = (inst.sky_dark[band] - 2.5 * np.log10(1.0 + MOON_SKY[band] * illum**2)
          - 2.5 * np.log10(X) + inst.extinction[band] * (X - 1.0) + sky_night)
    sky_e = p.exptime * 10 ** (-0.4 * (mu - inst.zero_points[band])) * inst.pixel_scale**2
    xi, eta = frng.normal(0.0, inst.pointing_jitter_arcsec, 2)
    cra, cdec = sky.tangent_to_radec(p.pointing_ra, p.pointing_dec, xi, eta)
    rot = inst.rotation_deg + float(frng.normal(0.0, inst.rotation_jitter_deg))
    wcs = headers.wcs_cards(inst, float(cra), float(cdec), rot)
    return _Frame(p, inst, expid, X, float(zp), inst.colour_terms[band], fwhm, float(sky_e), float(mu), wcs, rot)


def _set_barycentric_times(frames: list[_Frame]) -> None:
    """Each frame's mid-exposure as BJD_TDB (MJD form), from its site towards its field's mean pointing (the
    ~0.1 s difference across a field is far below any timing the survey resolves)."""
    from ..timescales import bjd_tdb

    for name in dict.fromkeys(fr.plan.field for fr in frames):  # per field: fields far apart differ by minutes
        group = [fr for fr in frames if fr.plan.field == name]
        sites = [SITES[fr.plan.site] for fr in group]
        ra = np.mean([fr.plan.pointing_ra for fr in group])
        dec = np.mean([fr.plan.pointing_dec for fr in group])
        jd = bjd_tdb([fr.plan.mjd_mid for fr in group], [s.lat for s in sites], [s.lon for s in sites],
                     [s.height_m for s in sites], ra, dec)
        for fr, t in zip(group, jd, strict=True):
            fr.bjd_tdb_mjd = float(t - 2400000.5)


def _sources(fr: _Frame, stars: sky.StarTable, variables, transient, system):
    """True sources (catalogue stars + transient) near the frame, at the frame's time.

    Returns ids (-1 for the transient), names, pixel x/y (0-based), band mag, g-r.
    """
    p, inst = fr.plan, fr.inst
    w = wcs_from_cards(fr.wcs)
    ny, nx = inst.shape
    reach = 0.75 * max(nx, ny) * inst.pixel_scale + 60.0
    xi, eta = sky.radec_to_tangent(fr.wcs["CRVAL1"], fr.wcs["CRVAL2"], stars.ra, stars.dec)
    near = (np.abs(xi) < reach) & (np.abs(eta) < reach) & (stars.field == p.field)
    ids = stars.id[near]
    names = stars.target[near]
    ra, dec = stars.ra[near], stars.dec[near]
    g, r = stars.g[near].copy(), stars.r[near].copy()
    t = fr.bjd_tdb_mjd  # variables, transits and the transient keep barycentric time, not the site's UTC
    for v in variables:
        sel = names == v.name
        g[sel], r[sel] = v.mag("g", t), v.mag("r", t)
    host = names == "OA-T1"
    if host.any():
        g[host] -= 2.5 * np.log10(system.relative_flux(t, "g")[0])
        r[host] -= 2.5 * np.log10(system.relative_flux(t, "r")[0])
    if transient.field == p.field:
        tg, tr = float(transient.mag("g", t)), float(transient.mag("r", t))
        if np.isfinite(tr):
            ids, names = np.append(ids, -1), np.append(names, transient.name)
            ra, dec = np.append(ra, transient.ra), np.append(dec, transient.dec)
            g, r = np.append(g, tg), np.append(r, tr)
    x, y = w.wcs_world2pix(ra, dec, 0)
    mag = g if p.band == "g" else r
    return ids, names, np.asarray(x), np.asarray(y), mag, g - r


def _counts_e(fr: _Frame, mag, colour):
    """counts(e-) = exptime * 10**(-0.4 * (m + CT (g-r) - ZP))."""
    return fr.plan.exptime * 10 ** (-0.4 * (mag + fr.colour_term * colour - fr.zero_point))


def _in_frame(inst, x, y, margin=0.0):
    ny, nx = inst.shape
    return (x >= -0.5 + margin) & (x <= nx - 0.5 - margin) & (y >= -0.5 + margin) & (y <= ny - 0.5 - margin)


def _add_corrupt_plans(plan, instruments):
    """One extra slt40 frame after an out-of-transit visit (to be truncated) and one ota80
    slot (to hold garbage bytes) after an ota80 visit."""
    oot = [p for p in plan if p.instrument == "slt40" and p.purpose == "oot"]
    last = oot[len(oot) // 2 - 1] if len(oot) >= 2 else oot[-1]
    gap = int((last.exptime + schedule.OVERHEAD_S + 7.0) * 1000)
    trunc = replace(last, band="r", exptime=instruments["slt40"].exptime["r"],
                    start_ms=last.start_ms + gap, purpose="corrupt")
    ota = [p for p in plan if p.instrument == "ota80"]
    olast = ota[len(ota) // 2 - 1]
    garbage = replace(olast, start_ms=olast.start_ms + int((olast.exptime + 40.0) * 1000), purpose="corrupt")
    out = plan + [trunc, garbage]
    out.sort(key=lambda p: (p.instrument, p.start_ms))
    return out, trunc, garbage


def _target_record(fr: _Frame, tg, src, counts, data) -> dict:
    """Where a target is on the frame, how bright, and whether it saturated."""
    ids, names, x, y, mag, colour = src
    inst = fr.inst
    sel = np.flatnonzero(names == tg.name)
    if len(sel) == 0:  # the transient before it appears
        tx, ty = (float(v) for v in wcs_from_cards(fr.wcs).wcs_world2pix(tg.ra, tg.dec, 0))
        return {"x": tx, "y": ty, "in_frame": bool(_in_frame(inst, tx, ty)),
                "present": False, "mag": None, "counts_e": 0.0, "saturated": False}
    i = int(sel[0])
    ix, iy = int(round(x[i])), int(round(y[i]))
    box = data[max(iy - 1, 0):iy + 2, max(ix - 1, 0):ix + 2]
    return {
        "x": float(x[i]), "y": float(y[i]),
        "in_frame": bool(_in_frame(inst, x[i], y[i])),
        "present": True, "mag": float(mag[i]), "colour_gr": float(colour[i]),
        "counts_e": float(counts[i]),
        "saturated": bool(box.size and float(box.max()) >= inst.saturation_adu),
    }


def _exposure_record(fr: _Frame, hdr, fname: str, targets, src, counts, data) -> dict:
    """truth["exposures"] entry: identity, conditions, true WCS and photometric model, targets."""
    inst, p = fr.inst, fr.plan
    ids, _names, x, y, _mag, _colour = src
    return {
        "file": fname,
        "instrument": inst.name,
        "exposure": headers.exposure_number(inst, p, fr.expid),
        "band": p.band,
        "physical_filter": inst.filters[p.band],
        "field": p.field,
        "site": p.site,
        "purpose": p.purpose,
        "transit_epoch": p.transit_epoch,
        "mjd": p.mjd_mid,
        "mjd_start": p.mjd_start,
        "bjd_tdb_mid": fr.bjd_tdb_mjd,
        "date_obs": hdr["DATE-OBS"],
        "exptime": p.exptime,
        "pointing": {"ra": p.pointing_ra, "dec": p.pointing_dec},
        "has_wcs": fr.has_wcs,
        "wcs": fr.wcs,
        "rotation_deg": fr.rotation_deg,
        "zero_point": fr.zero_point,
        "colour_term": fr.colour_term,
        "airmass": fr.airmass,
        "seeing_fwhm_arcsec": fr.fwhm_arcsec,
        "seeing_fwhm_px": fr.fwhm_px,
        "psf": {"model": "moffat", "beta": inst.psf_beta},
        "sky_e_per_px": fr.sky_e,
        "sky_mag_per_arcsec2": fr.sky_mag,
        "gain": inst.gain,
        "read_noise": inst.read_noise,
        "bias_adu": inst.bias_adu,
        "saturation_adu": inst.saturation_adu,
        "n_refcat_stars": int(np.sum((ids > 0) & _in_frame(inst, x, y))),
        "targets": {t.name: _target_record(fr, t, src, counts, data) for t in targets if t.field == p.field},
    }


ASTEROIDS_AFTER_NIGHTS = 25.0  # asteroids pass after the template epochs (pipelines/transient.yaml: 20 nights)


def _asteroid_frames(frames: list[_Frame], field: str, after_mjd: float) -> list[dict]:
    """What sim.asteroids needs of the good frames of a field: time, site, centre, half-width."""
    out = []
    for fr in frames:
        if fr.corrupt is None and fr.plan.field == field and fr.plan.mjd_mid > after_mjd:
            site = SITES[fr.plan.site]
            out.append({"mjd": fr.plan.mjd_mid, "lon": site.lon, "lat": site.lat, "height": site.height_m,
                        "ra": fr.wcs["CRVAL1"], "dec": fr.wcs["CRVAL2"],
                        "half_width_arcsec": 0.5 * min(fr.inst.shape) * fr.inst.pixel_scale - 5.0})
    return out


def _add_asteroids(frames: list[_Frame], srcs: list, bodies: list) -> list[dict]:
    """Append each body to the sources of the frames of its field (ids -2, -3, ...); per frame, where it is."""
    per_frame: list[dict] = [{} for _ in frames]
    if not bodies:
        return per_frame
    mjd = np.array([fr.plan.mjd_mid for fr in frames])
    sites = [SITES[fr.plan.site] for fr in frames]
    for k, b in enumerate(bodies):
        ra, dec, v = sso.track(b, mjd, [s.lon for s in sites], [s.lat for s in sites], [s.height_m for s in sites])
        r = v + sso.R_MINUS_V
        for i, fr in enumerate(frames):
            x, y = (float(c) for c in wcs_from_cards(fr.wcs).wcs_world2pix(ra[i], dec[i], 0))
            if not _in_frame(fr.inst, x, y, -20.0):
                continue
            ids, names, sx, sy, mag, colour = srcs[i]
            m = r[i] + (sso.GR_COLOUR if fr.plan.band == "g" else 0.0)
            srcs[i] = (np.append(ids, -2 - k), np.append(names, b.designation), np.append(sx, x), np.append(sy, y),
                       np.append(mag, m), np.append(colour, sso.GR_COLOUR))
            per_frame[i][b.designation] = {"ra": float(ra[i]), "dec": float(dec[i]), "x": x, "y": y,
                                           "in_frame": bool(_in_frame(fr.inst, x, y)), "mag": float(m)}
    return per_frame


def generate_survey(outdir: Path, *, seed: int = 42, size: str = "small", raw_mode: bool = False,
                    asteroids: int = 0, standard_field: bool = False) -> SurveyManifest:
    """Write raw/*.fits, refcat.ecsv and truth.json under `outdir` and describe them.

    Re-running into the same directory replaces raw/*.fits.  Deterministic in `seed`. ``raw_mode`` adds each
    camera's instrument signature (bias pattern, dark current, flat field, hot and dead pixels: ``signature``)
    to the science frames and writes its bias, dark and flat frames (``calframes``); without it every output
    byte is what it always was. ``asteroids``: that many main-belt minor planets cross the first field after
    the template epochs (``sim.asteroids``), their orbits written to ``mpcorb.dat``; with 0 nothing changes.
    ``standard_field``: the night after the season, each camera also takes five dithered g, r pairs of a standard
    field (``sky.STANDARD_FIELD``, purpose ``standard``) from which the colour terms can be measured; the science
    frames, their stars and catalogue rows are byte for byte what they are without it.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, not {size!r}")
    outdir = Path(outdir)
    raw = outdir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for old in raw.glob("*.fits"):
        old.unlink()

    spec = schedule.SIZES[size]
    instruments = make_instruments(size)
    fields = sky.make_fields(size, standard=standard_field)
    science_fields = [f for f in fields if not f.standard]
    targets = sky.make_targets(fields)
    stars = sky.make_star_truth(_rng(seed, "stars"), fields, targets)
    refcat_path = outdir / "refcat.ecsv"
    sky.write_refcat(_rng(seed, "refcat"), stars, refcat_path,
                     variable_targets=[t.name for t in targets if t.kind == "variable"],
                     standard_fields=[f.name for f in fields if f.standard], standard_rng=_rng(seed, "refcat-standard"))
    vrng = _rng(seed, "variability")
    variables = lightcurves.make_variables(vrng, targets, schedule.SEASON_START)
    transient = lightcurves.make_transient(vrng, targets, schedule.SEASON_START, spec.season_nights)
    system = planet.simulate_transits(schedule.SEASON_START + spec.season_nights + 3.0)
    plan = schedule.make_plan(_rng(seed, "schedule"), size, instruments, science_fields, targets, system)
    plan, trunc_plan, garbage_plan = _add_corrupt_plans(plan, instruments)
    for f in fields:
        if f.standard:
            plan += schedule.standard_night(_rng(seed, "standard-schedule"), size, instruments, f)
    plan.sort(key=lambda p: (p.instrument, p.start_ms))

    # Exposure ids in time order per instrument; then observing conditions per frame.
    frames: list[_Frame] = []
    counters = dict(EXPID_BASE)
    for p in plan:
        inst = instruments[p.instrument]
        expid = counters.get(inst.name, 0)
        if inst.name in counters:
            counters[inst.name] += 1
        fr = _conditions(seed, inst, p, expid)
        fr.corrupt = ("truncated" if p is trunc_plan else "garbage" if p is garbage_plan else None)
        frames.append(fr)

    _set_barycentric_times(frames)
    # Sources per frame (needed to decide which frames may lose their WCS).
    srcs = [_sources(fr, stars, variables, transient, system) for fr in frames]
    bodies = (sso.make_asteroids(_rng(seed, "asteroids"), asteroids, fields[0], targets,
                                 _asteroid_frames(frames, fields[0].name, schedule.SEASON_START + ASTEROIDS_AFTER_NIGHTS))
              if asteroids > 0 else [])
    on_frame = _add_asteroids(frames, srcs, bodies)
    wrng = _rng(seed, "wcs-share")
    for name, inst in instruments.items():
        idx = [i for i, fr in enumerate(frames)
               if fr.inst.name == name and fr.corrupt is None and fr.plan.purpose != "standard"]
        n_drop = int(round((1.0 - inst.wcs_fraction) * len(idx)))
        ok = [i for i in idx
              if np.sum((srcs[i][0] > 0) & _in_frame(inst, srcs[i][2], srcs[i][3], 3.0)) >= SOLVABLE_MIN_STARS]
        for i in wrng.permutation(ok)[:n_drop]:
            frames[int(i)].has_wcs = False

    sigs = rawmode.signatures(seed, instruments) if raw_mode else {}
    exposures, exposure_files, corrupt = [], [], []
    for fr, (ids, names, x, y, mag, colour), seen in zip(frames, srcs, on_frame, strict=True):
        inst, p = fr.inst, fr.plan
        counts = _counts_e(fr, mag, colour)
        expected = fr.sky_e + render.star_image(inst.shape, x, y, counts, fr.fwhm_px, inst.psf_beta)
        bias = inst.bias_adu
        if raw_mode:
            expected, bias = rawmode.apply_signature(sigs[inst.name], expected, p.exptime)
        data = render.expose(_rng(seed, "noise", inst.name, p.start_ms), expected,
                             inst.gain, inst.read_noise, bias, inst.saturation_adu, inst.dtype)
        hdr = headers.build_header(inst, p, fr.expid, fr.airmass, fr.wcs if fr.has_wcs else None)
        if raw_mode:
            rawmode.mark_raw(inst, hdr)
        fname = headers.file_name(inst, p, fr.expid)
        path = raw / fname
        blob = headers.hdu_bytes(data, hdr)
        if fr.corrupt == "truncated":
            header_len = headers.header_length(blob)
            kept = headers.write_truncated(path, blob, header_len, _rng(seed, "truncate"))
            corrupt.append({"file": fname, "instrument": inst.name, "problem": "truncated",
                            "detail": f"valid header, data cut after {kept} of {len(blob)} bytes",
                            "expected_failure": "header reads; accessing .data raises (TypeError/ValueError)"})
            continue
        if fr.corrupt == "garbage":
            headers.write_garbage(path, _rng(seed, "garbage"))
            corrupt.append({"file": fname, "instrument": inst.name, "problem": "garbage_header",
                            "detail": "random bytes, no FITS header",
                            "expected_failure": "astropy.io.fits.open raises OSError (no SIMPLE card)"})
            continue
        path.write_bytes(blob)
        exposure_files.append(path)

        exposures.append(_exposure_record(fr, hdr, fname, targets, (ids, names, x, y, mag, colour), counts, data))
        if bodies:
            exposures[-1]["asteroids"] = seen

    observed = sorted({e["transit_epoch"] for e in exposures if e["purpose"] == "transit"})
    truth = {
        "seed": seed,
        "size": size,
        "season": {"mjd_start": schedule.SEASON_START, "nights": spec.season_nights},
        "fields": [{"name": f.name, "ra": f.ra, "dec": f.dec, "refcat_half_width_arcmin": f.half_width_arcmin,
                    **({"standard": True} if f.standard else {})} for f in fields],
        "instruments": {k: v.truth_summary() for k, v in instruments.items()},
        "targets": [
            {"name": t.name, "ra": t.ra, "dec": t.dec, "kind": t.kind, "field": t.field,
             "r": t.r, "g": t.g,
             "refcat_id": (int(stars.id[stars.target == t.name][0]) if t.kind != "transient" else None)}
            for t in targets
        ],
        "planet": system.truth(observed),
        "variables": [v.truth() for v in variables],
        "transient": transient.truth(),
        "refcat": {"file": refcat_path.name, "n": len(stars),
                   "position_error_arcsec": sky.REFCAT_POS_ERR_ARCSEC,
                   "mag_error_range": list(sky.REFCAT_MAG_ERR),
                   "model": "refcat = truth + N(0, err); err given in g_err/r_err",
                   **({"standard_mag_error_range": list(sky.STANDARD_MAG_ERR)} if standard_field else {})},
        "time_system": "exposures: mjd/mjd_start/date_obs are UTC, bjd_tdb_mid is BJD_TDB - 2400000.5; variables, "
                       "planet transit times and the transient are functions of BJD_TDB - 2400000.5",
        "photometry_model": "counts_e = exptime * 10**(-0.4*(m_true + colour_term*(g-r) - zero_point)); "
                            "ADU = counts_e/gain + bias_adu",
        "exposures": exposures,
        "corrupt_files": corrupt,
        "stars": stars.to_truth(),
    }
    calib_files: list[Path] = []
    if raw_mode:
        truth["photometry_model"] = rawmode.PHOTOMETRY_MODEL
        truth["raw_mode"], calib_files = rawmode.write_calibration(seed, instruments, sigs, frames, raw, outdir)
    orbit_file = None
    if bodies:
        orbit_file = outdir / "mpcorb.dat"
        sso.write_mpcorb(bodies, orbit_file)
        truth["asteroids"] = {"file": orbit_file.name, "bodies": [b.truth() for b in bodies],
                              "model": "two-body orbits; frames show them where these MPCORB lines put them "
                                       "(astro.orbits, topocentric, light time), V from H-G, r = V - 0.2, g - r = 0.55"}
    truth_path = outdir / "truth.json"
    truth_path.write_text(json.dumps(jsonable(truth, nonfinite="keep"), indent=1, allow_nan=False) + "\n")

    per_inst = {k: sum(1 for e in exposures if e["instrument"] == k) for k in instruments}
    corrupt_paths = tuple(raw / c["file"] for c in corrupt)
    return SurveyManifest(
        outdir=outdir, seed=seed, size=size,
        raw_files=tuple(sorted(raw.glob("*.fits"))),
        exposure_files=tuple(exposure_files),
        corrupt_files=corrupt_paths,
        refcat=refcat_path, truth=truth_path,
        n_exposures=len(exposures), n_corrupt=len(corrupt), n_refcat=len(stars),
        exposures_per_instrument=per_inst,
        calibration_files=tuple(calib_files), orbit_file=orbit_file,
    )
