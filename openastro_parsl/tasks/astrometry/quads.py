"""The built-in plate solver: geometric hashing of star quads (the astrometry.net idea, in numpy/scipy).

Four stars A, B, C, D, with A-B the widest pair, are mapped by the similarity that sends A to (0, 0) and
B to (1, 1); the positions of C and D there, (cx, cy, dx, dy), do not change under shift, rotation or
scale, so a quad of image stars and the same quad of catalogue stars share this 4-number code. Codes are
made canonical (cx + dx <= 1, cx <= dx) so the labelling of A/B and C/D does not matter, and the image is
hashed in both parities (a mirrored camera is a reflection, which the code does not absorb).

The catalogue is searched region by region (circles a little larger than the frame, brightest stars
first), nearest the pointing hint first, or over the whole catalogue when blind; a region's quad codes go
into a cKDTree and every image code within ``code_tolerance`` is a hypothesis: the similarity fitted to
its four star pairs predicts where every catalogue star falls on the frame, and enough of them landing
on detections starts the shared match-and-refit (TAN, optional SIP) whose verdict is final.
"""

from __future__ import annotations

import functools
import itertools
import time
from dataclasses import dataclass

import numpy as np

from .fit import (
    Catalogue,
    SolveResult,
    accept,
    chance_probability,
    fit_wcs,
    in_frame,
    mutual_match,
    refine,
    sky_centre,
    tangent_plane,
)
from .sources import Hints, Sources

_PAIRS = np.array(list(itertools.combinations(range(4), 2)))  # the six pairs of a quad
_OTHERS = np.array([[k for k in range(4) if k not in p] for p in _PAIRS])
_ONE_ONE = 1.0 + 1.0j


@dataclass
class QuadSettings:
    """Knobs of the matcher (the task's config fills these)."""

    n_image_stars: int = 15          # brightest detections hashed into quads
    n_catalogue_stars: int = 30      # brightest catalogue stars per region
    code_tolerance: float = 0.012    # match radius in code space
    min_quad_pix: float = 12.0       # image quads narrower than this (A-B, pixels) are too noisy to hash
    hypothesis_radius_pix: float = 4.0  # a quad's similarity must put this close to detections to count
    min_matches: int = 6
    match_radius_pix: float = 2.0
    max_rms_pix: float = 1.0
    max_false_alarm: float = 1e-9    # largest chance probability of the matches allowed for a solution
    sip_degree: int | None = None
    scale_tolerance: float = 0.15    # fractional uncertainty of the scale hint
    search_radius_arcmin: float | None = None  # how far the frame centre may be from the pointing hint
    blind: bool = True               # fall back to the whole catalogue when the hinted search fails
    max_seconds: float = 60.0
    max_hypotheses_per_region: int = 3000


# -- quad codes --------------------------------------------------------------------------------------------
def quad_codes(z: np.ndarray, combos: np.ndarray, variants: bool = False):
    """Codes of quads ``combos`` (m, 4) of points ``z`` (complex).

    Returns (codes (k, 4), ordered star indices (k, 4) as A, B, C, D, widest-pair length (k,), quad row (k,)).
    With ``variants`` every quad also yields its three other A/B, C/D labellings, so an image quad whose
    noisy code sits on a canonical boundary still meets the catalogue's canonical code.
    """
    pts = z[combos]                                        # (m, 4)
    d = np.abs(pts[:, _PAIRS[:, 0]] - pts[:, _PAIRS[:, 1]])  # (m, 6)
    k = np.argmax(d, axis=1)
    rows = np.arange(len(combos))
    ia, ib = _PAIRS[k, 0], _PAIRS[k, 1]
    ic, id_ = _OTHERS[k, 0], _OTHERS[k, 1]
    order = np.column_stack([combos[rows, ia], combos[rows, ib], combos[rows, ic], combos[rows, id_]])
    A, B, C, D = (z[order[:, i]] for i in range(4))
    t = _ONE_ONE / (B - A)
    c, dd = (C - A) * t, (D - A) * t
    swap_ab = (c.real + dd.real) > 1.0
    c = np.where(swap_ab, _ONE_ONE - c, c)
    dd = np.where(swap_ab, _ONE_ONE - dd, dd)
    order[swap_ab] = order[swap_ab][:, [1, 0, 2, 3]]
    swap_cd = c.real > dd.real
    c, dd = np.where(swap_cd, dd, c), np.where(swap_cd, c, dd)
    order[swap_cd] = order[swap_cd][:, [0, 1, 3, 2]]
    length = np.abs(B - A)
    codes = np.column_stack([c.real, c.imag, dd.real, dd.imag])
    if not variants:
        return codes, order, length, rows
    all_codes, all_orders = [codes], [order]
    for sab, scd in ((True, False), (False, True), (True, True)):
        cc, dv, o = c, dd, order
        if sab:
            cc, dv, o = _ONE_ONE - cc, _ONE_ONE - dv, o[:, [1, 0, 2, 3]]
        if scd:
            cc, dv, o = dv, cc, o[:, [0, 1, 3, 2]]
        all_codes.append(np.column_stack([cc.real, cc.imag, dv.real, dv.imag]))
        all_orders.append(o)
    return (np.concatenate(all_codes), np.concatenate(all_orders), np.tile(length, 4), np.tile(rows, 4))


@functools.lru_cache(maxsize=64)
def _combos(n: int) -> np.ndarray:
    if n < 4:
        return np.empty((0, 4), int)
    out = np.array(list(itertools.combinations(range(n), 4)), dtype=np.int64)
    out.setflags(write=False)
    return out


def _similarity(zi: np.ndarray, wc: np.ndarray):
    """Least-squares w = a z + b for each row of 4 pairs; returns a, b, max residual."""
    zm, wm = zi.mean(axis=1, keepdims=True), wc.mean(axis=1, keepdims=True)
    dz, dw = zi - zm, wc - wm
    a = (dw * np.conj(dz)).sum(axis=1) / (np.abs(dz) ** 2).sum(axis=1)
    b = wm[:, 0] - a * zm[:, 0]
    resid = np.abs(a[:, None] * zi + b[:, None] - wc).max(axis=1)
    return a, b, resid


# -- the search --------------------------------------------------------------------------------------------
@dataclass
class _Search:
    """One search over catalogue regions at one frame-size guess."""

    half_diag_arcsec: float        # frame half-diagonal on the sky (upper bound for this band)
    scale_lo: float
    scale_hi: float
    origin: complex                # tangent-plane point the search spirals out from
    radius_arcsec: float           # how far from origin the frame centre may be


def _regions(search: _Search) -> list[complex]:
    """Region centres on a square grid covering the search circle, nearest the origin first."""
    spacing = 0.5 * search.half_diag_arcsec
    n = int(np.ceil(search.radius_arcsec / spacing))
    g = np.arange(-n, n + 1) * spacing
    cx, cy = np.meshgrid(g, g)
    c = (cx + 1j * cy).ravel()
    c = c[np.abs(c) <= search.radius_arcsec + 0.5 * spacing]
    c = c[np.argsort(np.abs(c), kind="stable")]
    return list(c + search.origin)


def solve_quads(sources: Sources, cat: Catalogue, hints: Hints, settings: QuadSettings | None = None) -> SolveResult:
    """Plate-solve ``sources`` against ``cat``; the result's WCS is None (with a reason) when nothing verifies."""
    s = settings or QuadSettings()
    t0 = time.perf_counter()
    stats = {"regions": 0, "hypotheses": 0, "blind": False}
    need = max(4, s.min_matches)
    if len(sources) < need:
        return SolveResult(None, None, f"only {len(sources)} sources detected (need {need})", stats)
    if len(cat) < need:
        return SolveResult(None, None, f"reference catalogue has only {len(cat)} stars (need {need})", stats)
    ny, nx = sources.shape
    half_diag_px = 0.5 * float(np.hypot(nx, ny))

    # Image quads from the brightest detections, in both parities.
    img = sources.brightest(s.n_image_stars)
    zimg = img.x + 1j * img.y
    combos = _combos(len(img))
    codes, order, length, _ = quad_codes(zimg, combos, variants=True)
    wide = length >= max(s.min_quad_pix, 0.08 * min(nx, ny))
    codes, order, length = codes[wide], order[wide], length[wide]
    if len(codes) == 0:
        return SolveResult(None, None, "no usable image quads (detections too close together)", stats)
    zmir = np.conj(zimg)
    codes_m, order_m, length_m, _ = quad_codes(zmir, combos, variants=True)
    wide_m = length_m >= max(s.min_quad_pix, 0.08 * min(nx, ny))
    img_codes = np.concatenate([codes, codes_m[wide_m]])
    img_order = np.concatenate([order, order_m[wide_m]])
    img_len = np.concatenate([length, length_m[wide_m]])
    img_parity = np.concatenate([np.zeros(len(codes), bool), np.ones(int(wide_m.sum()), bool)])
    from scipy.spatial import cKDTree  # here: planning imports this module, and scipy costs it a quarter second

    img_tree = cKDTree(img_codes)
    det_tree = cKDTree(sources.xy)

    # The catalogue on a tangent plane about the hint (or its own centre when blind).
    searches: list[tuple[str, float, float, list[_Search]]] = []
    cra, cdec = sky_centre(cat.ra, cat.dec)
    if hints.has_position:
        tp = (hints.ra, hints.dec)
        searches.append(("hint", *tp, _searches(hints, half_diag_px, s, origin=0j, radius=None)))
    if s.blind or not hints.has_position:
        searches.append(("blind", cra, cdec, []))

    last_reason = "no quad match verified"
    for mode, ra0, dec0, plan in searches:
        w_all = tangent_plane(cat.ra, cat.dec, ra0, dec0)
        ok = np.isfinite(w_all[:, 0])
        if ok.sum() < need:
            continue
        idx_ok = np.flatnonzero(ok)
        wcat = w_all[ok, 0] + 1j * w_all[ok, 1]
        cat_tree = cKDTree(w_all[ok])
        if mode == "blind":
            stats["blind"] = True
            extent = float(np.abs(wcat).max())
            plan = _searches(hints, half_diag_px, s, origin=0j, radius=extent, extent=extent)
        for search in plan:
            region_r = search.half_diag_arcsec + 0.5 * search.half_diag_arcsec / np.sqrt(2.0)
            for centre in _regions(search):
                if time.perf_counter() - t0 > s.max_seconds:
                    stats["seconds"] = time.perf_counter() - t0
                    return SolveResult(None, None, f"time limit {s.max_seconds:.0f} s reached after "
                                      f"{stats['regions']} regions, {stats['hypotheses']} hypotheses", stats)
                members = np.sort(cat_tree.query_ball_point([centre.real, centre.imag], region_r))
                if len(members) < 4:
                    continue
                stats["regions"] += 1
                result = _try_region(members[: s.n_catalogue_stars], wcat, idx_ok, cat_tree, cat, search,
                                     sources, det_tree, img_tree, img_codes, img_order, img_len, img_parity,
                                     zimg, s, stats)
                if result is not None:
                    stats["seconds"] = time.perf_counter() - t0
                    wcs, v = result
                    return SolveResult(wcs, v, f"{mode} quad match ({stats['regions']} regions, "
                                      f"{stats['hypotheses']} hypotheses)", stats)
        last_reason = (f"no quad match verified ({stats['regions']} catalogue regions, "
                       f"{stats['hypotheses']} hypotheses tested)")
    stats["seconds"] = time.perf_counter() - t0
    return SolveResult(None, None, last_reason, stats)


def _searches(hints: Hints, half_diag_px: float, s: QuadSettings, *, origin: complex, radius: float | None,
              extent: float | None = None) -> list[_Search]:
    """Frame-size bands to search: one when the scale is hinted, halving sizes from the catalogue's extent
    when it is not."""
    if hints.scale_arcsec:
        lo, hi = hints.scale_arcsec * (1 - s.scale_tolerance), hints.scale_arcsec * (1 + s.scale_tolerance)
        hd = half_diag_px * hi
        if radius is None:
            radius = (s.search_radius_arcmin * 60.0) if s.search_radius_arcmin is not None else hd
        return [_Search(hd, lo, hi, origin, radius)]
    if extent is None:
        # Position but no scale: search scales in bands around the hint, out to the configured radius.
        extent = (s.search_radius_arcmin or 30.0) * 60.0
    if radius is None:
        radius = (s.search_radius_arcmin * 60.0) if s.search_radius_arcmin is not None else extent
    out = []
    hd = 2.0 * extent
    while hd >= 10.0 and len(out) < 12:
        out.append(_Search(hd, 0.5 * hd / half_diag_px, (4.0 if not out else 1.0) * hd / half_diag_px,
                           origin, min(radius, extent)))
        hd *= 0.5
    return out


def _try_region(members, wcat, idx_ok, cat_tree, cat, search, sources, det_tree, img_tree, img_codes, img_order,
                img_len, img_parity, zimg, s: QuadSettings, stats):
    """Hash one catalogue region's quads, and test every image quad that matches one (best codes first)."""
    combos = members[_combos(len(members))]
    if len(combos) == 0:
        return None
    ccodes, corder, clen, _ = quad_codes(wcat, combos)
    lmin = img_len.min() * search.scale_lo
    lmax = img_len.max() * search.scale_hi
    keep = (clen >= lmin) & (clen <= lmax)
    if not keep.any():
        return None
    ccodes, corder, clen = ccodes[keep], corder[keep], clen[keep]
    from scipy.spatial import cKDTree

    pairs = img_tree.sparse_distance_matrix(cKDTree(ccodes), s.code_tolerance, output_type="ndarray")
    if len(pairs) == 0:
        return None
    pairs = pairs[np.argsort(pairs["v"], kind="stable")]
    ii, jj = pairs["i"], pairs["j"]
    # Similarity per hypothesis, pixel (mirrored for parity -) -> tangent plane; prune by scale and position.
    zq = zimg[img_order[ii]]
    zq = np.where(img_parity[ii][:, None], np.conj(zq), zq)
    wq = wcat[corder[jj]]
    a, b, resid = _similarity(zq, wq)
    scale = np.abs(a)
    ny, nx = sources.shape
    zc = (nx - 1) / 2.0 + 1j * (ny - 1) / 2.0
    centre = a * np.where(img_parity[ii], np.conj(zc), zc) + b
    good = (scale >= search.scale_lo) & (scale <= search.scale_hi) & (resid <= 3.0 * s.code_tolerance * clen[jj]) \
        & (np.abs(centre - search.origin) <= search.radius_arcsec + search.half_diag_arcsec)
    hyp = np.flatnonzero(good)[: s.max_hypotheses_per_region]
    r_fov = search.half_diag_arcsec * 1.05
    tried: set = set()
    for h in hyp:
        key = (bool(img_parity[ii[h]]), round(float(np.angle(a[h])), 2), round(float(np.log(scale[h])), 2),
               round(centre[h].real / (2 * scale[h])), round(centre[h].imag / (2 * scale[h])))
        if key in tried:
            continue
        tried.add(key)
        stats["hypotheses"] += 1
        near = np.asarray(cat_tree.query_ball_point([centre[h].real, centre[h].imag], r_fov), dtype=int)
        if len(near) < s.min_matches:
            continue
        zp = (wcat[near] - b[h]) / a[h]
        if img_parity[ii[h]]:
            zp = np.conj(zp)
        pairs_h = _affine_check(sources, wcat[near], zp, s)
        if pairs_h is None:
            continue
        det_i, k = pairs_h
        cat_idx = idx_ok[near[k]]
        try:
            wcs0 = fit_wcs(sources.x[det_i], sources.y[det_i], cat.ra[cat_idx], cat.dec[cat_idx],
                           weights=sources.weights(det_i), shape=sources.shape)
        except Exception:  # noqa: BLE001 - a degenerate hypothesis is just a bad hypothesis
            continue
        wcs, v = refine(wcs0, sources, cat, radius_pix=s.match_radius_pix, sip_degree=s.sip_degree,
                        iterations=2)
        if accept(v, len(sources), sources.shape, s.match_radius_pix, s.min_matches, s.max_rms_pix,
                  s.max_false_alarm):
            return wcs, v
    return None


def _affine_check(sources: Sources, wcat: np.ndarray, zp: np.ndarray, s: QuadSettings):
    """Cheap numpy screening of one hypothesis before any WCS is fitted.

    ``zp`` are the pixel positions the quad's similarity predicts for catalogue stars ``wcat`` (tangent
    plane). Stars landing near detections seed an affine tangent-plane -> pixel fit, which is matched again
    at the final radius; only hypotheses whose matches are far beyond chance survive. Returns (detection
    indices, indices into ``wcat``) of the matches, or None.
    """
    shape, n_src = sources.shape, len(sources)
    pix = np.column_stack([zp.real, zp.imag])
    radius = s.hypothesis_radius_pix
    for final in (False, True):
        on = np.flatnonzero(in_frame(pix[:, 0], pix[:, 1], shape))
        if len(on) < s.min_matches:
            return None
        det_i, k = mutual_match(sources.xy, pix[on], radius)
        limit = s.max_false_alarm if final else 1e-3
        if len(det_i) < s.min_matches or chance_probability(len(det_i), len(on), n_src, shape, radius) > limit:
            return None
        if final:
            return det_i, on[k]
        w = wcat[on[k]]
        design = np.column_stack([w.real, w.imag, np.ones(len(w))])
        coef, *_ = np.linalg.lstsq(design, sources.xy[det_i], rcond=None)
        pix = np.column_stack([wcat.real, wcat.imag, np.ones(len(wcat))]) @ coef
        radius = s.match_radius_pix
    return None
