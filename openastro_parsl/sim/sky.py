"""The true sky: fields, the star population, the science targets and the refcat.

Stars follow a rising (exponential) number-count law so most are faint, like a real
field; the reference catalogue is the truth plus small, recorded errors, so that a
calibration that reproduces the *truth* (not the catalogue) to better than the
catalogue errors is detectable as correct.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table

# Star surface density: ~400 stars (r 11-19.5) in a 14' x 14' box.
STAR_DENSITY_PER_ARCMIN2 = 400.0 / 196.0
MAG_RANGE = (11.0, 19.5)
COUNT_SLOPE = 0.22  # dlog10 N / dm (high galactic latitude)
COLOUR_RANGE = (0.2, 1.4)
REFCAT_POS_ERR_ARCSEC = 0.020
REFCAT_MAG_ERR = (0.010, 0.030)  # bright, faint

# A standard field (Landolt/Stetson-like): denser than the science fields, every star bright enough for each camera
# to measure well, colours spread evenly, and catalogue errors a few millimag -- what measures colour terms.
STANDARD_DENSITY_PER_ARCMIN2 = 6.0
STANDARD_ISOLATION_ARCSEC = 18.0  # standards are chosen clear of neighbours (apertures stay clean on 2" pixels)
STANDARD_MAG_RANGE = (12.5, 17.5)
STANDARD_MAG_ERR = (0.003, 0.008)  # bright, faint
STANDARD_COLOUR_RANGE = (-0.1, 1.7)  # wider than the science stars': standards are chosen for their colour spread

# Guarantee enough stars (and a few bright comparisons) near the targets so small
# detectors (slt40 at 128 px) always see a solvable, calibratable star field.
CENTRAL_HALF_WIDTH_ARCSEC = 45.0
CENTRAL_MIN_STARS = 10
CENTRAL_MIN_BRIGHT = 3
BRIGHT_HALF_WIDTH_ARCSEC = 32.0  # bright comparisons well inside even the slt40 FOV
COMPARISON_CLEAR_ARCSEC = 15.0  # ... and clean of neighbours
BRIGHT_LIMIT = 15.0
TARGET_CLEAR_RADIUS_ARCSEC = 20.0


@dataclass(frozen=True)
class Field:
    name: str
    ra: float
    dec: float
    half_width_arcmin: float  # refcat box half-size
    standard: bool = False  # a standard field: observed to measure the cameras' colour terms, not for science


@dataclass(frozen=True)
class Target:
    """A science target; `field` ties it to the field dimension."""

    name: str
    kind: str  # transit_host | variable | transient
    field: str
    ra: float
    dec: float
    r: float  # mean / peak r
    g: float


# name, kind, offset east (arcsec), offset north (arcsec), r, g-r
# All within ~35" of the demo1 centre, so every camera's FOV covers them.
_TARGET_LAYOUT = [
    ("OA-T1", "transit_host", 6.0, -4.0, 12.50, 0.45),
    ("OA-V1", "variable", -28.0, 18.0, 14.30, 0.25),
    ("OA-V2", "variable", 25.0, 27.0, 13.90, 1.00),
    ("OA-X1", "transient", -18.0, -26.0, 15.50, 0.10),
]


def make_fields(size: str, standard: bool = False) -> list[Field]:
    """The science fields of a survey size, then (``standard``) the standard field, always last so the science
    fields' random draws stay what they were without it."""
    if size == "small":
        out = [Field("demo1", 150.10, 2.20, 7.0)]
    else:
        out = [Field("demo1", 150.10, 2.20, 10.0), Field("demo2", 210.5, -5.3, 10.0)]
    return out + [STANDARD_FIELD] if standard else out


STANDARD_FIELD = Field("std1", 165.40, 0.80, 5.0, standard=True)


def tangent_to_radec(ra0, dec0, xi_arcsec, eta_arcsec):
    """Inverse gnomonic projection: standard coordinates (arcsec) -> RA/Dec (deg)."""
    a0, d0 = np.deg2rad(ra0), np.deg2rad(dec0)
    xi = np.deg2rad(np.asarray(xi_arcsec, dtype=float) / 3600.0)
    eta = np.deg2rad(np.asarray(eta_arcsec, dtype=float) / 3600.0)
    den = np.cos(d0) - eta * np.sin(d0)
    ra = a0 + np.arctan2(xi, den)
    dec = np.arctan2(np.sin(d0) + eta * np.cos(d0), np.hypot(xi, den))
    return np.mod(np.rad2deg(ra), 360.0), np.rad2deg(dec)


def radec_to_tangent(ra0, dec0, ra, dec):
    """Gnomonic projection: RA/Dec (deg) -> standard coordinates (arcsec)."""
    a0, d0 = np.deg2rad(ra0), np.deg2rad(dec0)
    a, d = np.deg2rad(np.asarray(ra, dtype=float)), np.deg2rad(np.asarray(dec, dtype=float))
    cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a - a0)
    xi = np.cos(d) * np.sin(a - a0) / cosc
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a - a0)) / cosc
    return np.rad2deg(xi) * 3600.0, np.rad2deg(eta) * 3600.0


def make_targets(fields: list[Field]) -> list[Target]:
    f = fields[0]
    out = []
    for name, kind, dx, dy, r, gr in _TARGET_LAYOUT:
        ra, dec = tangent_to_radec(f.ra, f.dec, dx, dy)
        out.append(Target(name, kind, f.name, float(ra), float(dec), r, r + gr))
    return out


def _draw_mags(rng, n):
    """r magnitudes from dN/dm ~ 10**(COUNT_SLOPE m) on MAG_RANGE (inverse CDF)."""
    lo, hi = MAG_RANGE
    span = 10 ** (COUNT_SLOPE * (hi - lo)) - 1.0
    u = rng.random(n)
    return lo + np.log10(1.0 + u * span) / COUNT_SLOPE


def _draw_colours(rng, n):
    """g-r: a G/K-dwarf bulk plus an M-dwarf tail, clipped to COLOUR_RANGE."""
    red = rng.random(n) < 0.25
    c = np.where(red, rng.normal(1.28, 0.08, n), rng.normal(0.55, 0.17, n))
    return np.clip(c, *COLOUR_RANGE)


@dataclass
class StarTable:
    """True stars (not the transient).  Column arrays, one row per star."""

    id: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    g: np.ndarray
    r: np.ndarray
    field: np.ndarray  # str
    target: np.ndarray  # str, "" if not a target

    def __len__(self):
        return len(self.id)

    def to_truth(self) -> list[dict]:
        return [
            {
                "id": int(self.id[i]),
                "ra": float(self.ra[i]),
                "dec": float(self.dec[i]),
                "g": float(self.g[i]),
                "r": float(self.r[i]),
                "field": str(self.field[i]),
                "target": str(self.target[i]) or None,
            }
            for i in range(len(self))
        ]


def _field_stars(rng, f: Field, targets: list[Target]):
    """Random stars for one field, kept clear of targets, topped up near the centre."""
    hw = f.half_width_arcmin * 60.0
    n = rng.poisson(STAR_DENSITY_PER_ARCMIN2 * (2 * f.half_width_arcmin) ** 2)
    xi = rng.uniform(-hw, hw, n)
    eta = rng.uniform(-hw, hw, n)
    r = _draw_mags(rng, n)
    gr = _draw_colours(rng, n)

    tgt = [t for t in targets if t.field == f.name]
    txy = np.array([radec_to_tangent(f.ra, f.dec, t.ra, t.dec) for t in tgt]).reshape(-1, 2)
    if len(txy):
        d = np.hypot(xi[:, None] - txy[:, 0], eta[:, None] - txy[:, 1]).min(axis=1)
        keep = d > TARGET_CLEAR_RADIUS_ARCSEC
        xi, eta, r, gr = xi[keep], eta[keep], r[keep], gr[keep]

    if tgt:
        host = next((t for t in tgt if t.kind == "transit_host"), tgt[0])
        cx, cy = radec_to_tangent(f.ra, f.dec, host.ra, host.dec)
        xi, eta, r, gr = list(xi), list(eta), list(r), list(gr)
        hb, hc = BRIGHT_HALF_WIDTH_ARCSEC, CENTRAL_HALF_WIDTH_ARCSEC

        def central(h, bright):
            return [(x, y) for x, y, m in zip(xi, eta, r, strict=True)
                    if abs(x - cx) < h and abs(y - cy) < h and (m < BRIGHT_LIMIT or not bright)]

        def add(mag, h, keep_out):
            """Uniform in the box around the host, outside every (x, y, radius) disc."""
            for _ in range(2000):
                x, y = cx + rng.uniform(-h, h), cy + rng.uniform(-h, h)
                if all(np.hypot(x - a, y - b) > rad for a, b, rad in keep_out):
                    break  # (if the box is too crowded the last draw is kept)
            xi.append(x), eta.append(y), r.append(mag), gr.append(float(_draw_colours(rng, 1)[0]))

        around_targets = [(a, b, TARGET_CLEAR_RADIUS_ARCSEC) for a, b in txy]
        # Bright comparisons first, clear of everything; then faint fill-in avoiding them.
        while len(central(hb, True)) < CENTRAL_MIN_BRIGHT:
            add(float(rng.uniform(12.8, 14.8)), hb,
                around_targets + [(a, b, COMPARISON_CLEAR_ARCSEC) for a, b in zip(xi, eta, strict=True)])
        while len(central(hc, False)) < CENTRAL_MIN_STARS:
            add(float(_draw_mags(rng, 1)[0]), hc,
                around_targets + [(a, b, 12.0) for a, b in zip(xi, eta, strict=True)]
                + [(a, b, COMPARISON_CLEAR_ARCSEC) for a, b in central(hb, True)])
        xi, eta, r, gr = map(np.asarray, (xi, eta, r, gr))
    ra, dec = tangent_to_radec(f.ra, f.dec, xi, eta)
    return ra, dec, r, gr


def _standard_stars(rng, f: Field):
    """A standard field's stars: isolated, and uniform on the sky, in magnitude over STANDARD_MAG_RANGE and in
    colour over STANDARD_COLOUR_RANGE."""
    hw = f.half_width_arcmin * 60.0
    n = rng.poisson(STANDARD_DENSITY_PER_ARCMIN2 * (2 * f.half_width_arcmin) ** 2)
    xi, eta = np.empty(0), np.empty(0)
    while len(xi) < n:  # sequential placement, each star at least STANDARD_ISOLATION_ARCSEC from the others
        x, y = rng.uniform(-hw, hw), rng.uniform(-hw, hw)
        if not len(xi) or np.min(np.hypot(xi - x, eta - y)) >= STANDARD_ISOLATION_ARCSEC:
            xi, eta = np.append(xi, x), np.append(eta, y)
    r = rng.uniform(*STANDARD_MAG_RANGE, n)
    gr = rng.uniform(*STANDARD_COLOUR_RANGE, n)
    ra, dec = tangent_to_radec(f.ra, f.dec, xi, eta)
    return ra, dec, r, gr


def make_star_truth(rng, fields: list[Field], targets: list[Target]) -> StarTable:
    """All true stars: random field stars plus the non-transient targets, ids by field then RA."""
    cols = {k: [] for k in ("ra", "dec", "g", "r", "field", "target")}
    for f in fields:
        ra, dec, r, gr = _standard_stars(rng, f) if f.standard else _field_stars(rng, f, targets)
        names = [""] * len(ra)
        for t in targets:
            if t.field == f.name and t.kind != "transient":
                ra, dec = np.append(ra, t.ra), np.append(dec, t.dec)
                r, gr = np.append(r, t.r), np.append(gr, t.g - t.r)
                names.append(t.name)
        for i in np.argsort(ra, kind="stable"):
            cols["ra"].append(float(ra[i]))
            cols["dec"].append(float(dec[i]))
            cols["r"].append(float(r[i]))
            cols["g"].append(float(r[i] + gr[i]))
            cols["field"].append(f.name)
            cols["target"].append(names[i])
    n = len(cols["ra"])
    return StarTable(
        id=np.arange(1, n + 1),
        ra=np.array(cols["ra"]),
        dec=np.array(cols["dec"]),
        g=np.array(cols["g"]),
        r=np.array(cols["r"]),
        field=np.array(cols["field"]),
        target=np.array(cols["target"]),
    )


def mag_error(m, mag_range=MAG_RANGE, err_range=REFCAT_MAG_ERR):
    """Catalogue 1-sigma error: 0.01 mag at the bright end, 0.03 at the faint limit (a standard field's: its own
    ranges)."""
    lo, hi = mag_range
    x = np.clip((np.asarray(m) - lo) / (hi - lo), 0.0, 1.0)
    return err_range[0] + (err_range[1] - err_range[0]) * x**2


def _perturbed(rng, stars: StarTable, sel, errors) -> dict:
    """Catalogue columns for the stars ``sel``: the truth plus N(0, err), positions and magnitudes."""
    n = int(np.sum(sel))
    tdec, tra, tg, tr = stars.dec[sel], stars.ra[sel], stars.g[sel], stars.r[sel]
    s = REFCAT_POS_ERR_ARCSEC / 3600.0
    dec = tdec + rng.normal(0.0, s, n)
    ra = tra + rng.normal(0.0, s, n) / np.cos(np.deg2rad(tdec))
    g_err, r_err = errors(tg), errors(tr)
    g = tg + rng.normal(0.0, 1.0, n) * g_err
    r = tr + rng.normal(0.0, 1.0, n) * r_err
    return {"id": stars.id[sel].astype(np.int64), "ra": np.round(ra, 8), "dec": np.round(dec, 8),
            "g": np.round(g, 4), "r": np.round(r, 4), "g_err": np.round(g_err, 4), "r_err": np.round(r_err, 4)}


def write_refcat(rng, stars: StarTable, path: Path, variable_targets=(), standard_fields=(),
                 standard_rng=None) -> Table:
    """Perturb the truth by the catalogue errors and write ECSV; the stars of ``variable_targets`` (names) are
    flagged ``variable``, as Gaia flags stars of such amplitude. The stars of ``standard_fields`` carry a standard
    catalogue's errors and draw them from ``standard_rng``, so the other stars' rows are what they were without."""
    std = np.isin(stars.field.astype(str), list(standard_fields))
    cols = _perturbed(rng, stars, ~std, mag_error)
    if std.any():
        extra = _perturbed(standard_rng, stars, std,
                           lambda m: mag_error(m, STANDARD_MAG_RANGE, STANDARD_MAG_ERR))
        cols = {k: np.concatenate([v, extra[k]]) for k, v in cols.items()}
    order = np.argsort(cols["id"], kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    named = dict(zip(stars.id.tolist(), stars.target.astype(str), strict=True))
    cols["variable"] = np.isin([named[i] for i in cols["id"].tolist()], list(variable_targets))
    t = Table(cols)
    for c, u in (("ra", "deg"), ("dec", "deg"), ("g", "mag"), ("r", "mag"), ("g_err", "mag"), ("r_err", "mag")):
        t[c].unit = u
    t.meta["comments"] = ["openastro_parsl synthetic reference catalogue (positions ICRS, epoch 2026)"]
    t.write(path, format="ascii.ecsv", overwrite=True)
    return t
