"""PSF matching (Alard & Lupton 1998): the kernel that takes one image's PSF to the other's, fitted on stars as
Gaussians times polynomials plus a differential sky, and the stars it is fitted on."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["fit_psf_matching_kernel", "gaussian_kernel", "select_kernel_stars", "template_stars"]


def gaussian_kernel(sigma: float, half: int) -> np.ndarray:
    """Unit-sum pixel-integrated Gaussian on a (2 half + 1)^2 grid (a delta when sigma is ~0)."""
    from scipy.special import erf

    if sigma < 1e-3:
        k = np.zeros((2 * half + 1, 2 * half + 1))
        k[half, half] = 1.0
        return k
    edges = np.arange(-half - 0.5, half + 1.0)
    g = np.diff(erf(edges / (math.sqrt(2.0) * sigma))) / 2.0
    k = np.outer(g, g)
    return k / k.sum()


def _al_basis(half: int, sigmas, degrees) -> np.ndarray:
    """Alard-Lupton basis: Gaussians of the given sigmas times x^i y^j (i + j <= degree), unit L2 norm."""
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(float)
    u, v = xx / half, yy / half
    out = []
    for sig, deg in zip(sigmas, degrees, strict=True):
        g = gaussian_kernel(max(sig, 0.3), half)
        for i in range(deg + 1):
            for j in range(deg + 1 - i):
                b = g * u**i * v**j
                out.append(b / np.sqrt(np.sum(b * b)))
    return np.array(out)


def select_kernel_stars(sci, tmpl, bad, var_s, max_stars: int, min_snr: float, saturation: float | None,
                  fwhm_guess: float, margin: int = 3):
    """Bright, unmasked, unsaturated sources of the science frame present in the template at a similar
    brightness (a transient, a cosmic ray or a mover cannot anchor the kernel), brightest first."""
    import sep

    ny, nx = sci.shape
    rms = float(np.sqrt(np.median(var_s[~bad]))) if (~bad).any() else 1.0
    objs = sep.extract(np.ascontiguousarray(sci), 5.0, err=rms, mask=np.ascontiguousarray(bad), minarea=5)
    if len(objs) == 0:
        return objs, np.zeros(0, bool)
    f, ferr, _ = sep.sum_circle(np.ascontiguousarray(sci), objs["x"], objs["y"], 1.5 * fwhm_guess,
                                var=np.ascontiguousarray(var_s))
    keep = (f > min_snr * ferr) & ((objs["flag"] & 0x10) == 0)
    if saturation is not None:
        keep &= objs["peak"] < 0.8 * saturation
    ix, iy = np.rint(objs["x"]).astype(int), np.rint(objs["y"]).astype(int)
    keep &= (ix >= margin) & (ix < nx - margin) & (iy >= margin) & (iy < ny - margin)
    good = []
    for i in np.flatnonzero(keep)[np.argsort(-f[keep])]:
        core = (slice(iy[i] - 2, iy[i] + 3), slice(ix[i] - 2, ix[i] + 3))
        if bad[core].any():
            continue
        tc, sc = tmpl[core].sum(), sci[core].sum()
        if not (0.3 * sc < tc < 3.0 * sc):
            continue
        good.append(i)
        if len(good) >= max_stars:
            break
    return objs[np.array(good, int)], _isolated(objs, np.array(good, int), 2.5 * fwhm_guess + 2.0)


def _isolated(objs, idx, radius: float) -> np.ndarray:
    """True for sources with no other detection brighter than 1 % of them within ``radius`` px (PSF stars)."""
    out = np.ones(len(idx), bool)
    for k, i in enumerate(idx):
        d = np.hypot(objs["x"] - objs["x"][i], objs["y"] - objs["y"][i])
        out[k] = not np.any((d > 0) & (d < radius) & (objs["flux"] > 0.01 * objs["flux"][i]))
    return out


def template_stars(tmpl, bad, var_t, fwhm_guess: float, max_stars=25, margin=3):
    """Bright sources of the (deep) template, for its PSF when the science frame has too few."""
    import sep

    rms = float(np.sqrt(np.median(var_t[~bad]))) if (~bad).any() else 1.0
    if not np.isfinite(rms) or rms <= 0:
        return []
    objs = sep.extract(np.ascontiguousarray(tmpl), 10.0, err=rms, mask=np.ascontiguousarray(bad), minarea=5)
    ny, nx = tmpl.shape
    ok = (objs["x"] > margin) & (objs["x"] < nx - margin) & (objs["y"] > margin) & (objs["y"] < ny - margin)
    ok &= ((objs["flag"] & 0x10) == 0) & _isolated(objs, np.arange(len(objs)), 2.5 * fwhm_guess + 2.0)
    idx = np.flatnonzero(ok)
    order = idx[np.argsort(-objs["flux"][idx])][:max_stars]
    return list(zip(objs["x"][order], objs["y"][order], strict=True))


def fit_psf_matching_kernel(ref, target, var_ref, var_target, bad, centres, half: int, stamp_half: int, sigmas,
                            degrees=(4, 3, 2), clip: float = 3.0, basis: np.ndarray | None = None):
    """Least-squares kernel K (and sky offset b) with target ~ K * ref + b over stamps around ``centres``.

    Stamps may cross the image edge or masked pixels: those target pixels (and any whose kernel footprint in
    ``ref`` touches one) get zero weight. Weights use the variance of the residual, var_target + K^2 * var_ref
    (re-evaluated each iteration), so the chi2 of the two matching directions can be compared. Stamps whose
    chi2 is far above the median (a variable star, a blend) are dropped and the fit repeated.

    ``basis`` replaces the Alard-Lupton basis (a single Gaussian fits only the flux ratio).
    Returns (kernel, background, chi2 per degree of freedom, number of stamps used).
    """
    from scipy.ndimage import binary_dilation
    from scipy.signal import fftconvolve

    P = stamp_half + half
    refp = np.pad(ref, P)
    tp = np.pad(target, P)
    vrp = np.pad(var_ref, P)
    vtp = np.pad(var_target, P, constant_values=np.inf)
    badp = np.pad(bad, P, constant_values=True)
    unusable = binary_dilation(badp, np.ones((2 * half + 1, 2 * half + 1), bool)) | ~np.isfinite(vtp)
    refp = np.where(badp, 0.0, refp)
    basis = _al_basis(half, sigmas, degrees) if basis is None else np.asarray(basis, float)
    nb = len(basis)
    stamps = []
    for (cx, cy) in centres:
        cx, cy = int(cx) + P, int(cy) + P
        r = refp[cy - P:cy + P + 1, cx - P:cx + P + 1]
        vr = vrp[cy - P:cy + P + 1, cx - P:cx + P + 1]
        sl = (slice(cy - stamp_half, cy + stamp_half + 1), slice(cx - stamp_half, cx + stamp_half + 1))
        ok = ~unusable[sl].ravel()
        if ok.mean() < 0.3:
            continue
        conv = fftconvolve(r[None], basis, mode="valid", axes=(1, 2)).reshape(nb, -1)[:, ok]
        a = np.column_stack([conv.T, np.ones(ok.sum())])
        stamps.append({"a": a, "t": tp[sl].ravel()[ok], "vt": vtp[sl].ravel()[ok], "vr": vr, "ok": ok})
    if not stamps:
        raise ValueError("no usable kernel stamps")

    def weights(kern):
        for st in stamps:
            vk = fftconvolve(st["vr"], kern**2, mode="valid").ravel()[st["ok"]]
            st["w"] = 1.0 / np.sqrt(np.maximum(st["vt"] + np.clip(vk, 0, None), 1e-20))

    use = np.ones(len(stamps), bool)
    chi = np.zeros(len(stamps))
    kern = gaussian_kernel(0.0, half)
    coef = None
    for it in range(4):
        weights(kern)
        # normal equations, accumulated per stamp (A^T W A is tiny: basis size squared)
        M = np.zeros((nb + 1, nb + 1))
        v = np.zeros(nb + 1)
        for st, u in zip(stamps, use, strict=True):
            if u:
                aw = st["a"] * (st["w"] ** 2)[:, None]
                M += aw.T @ st["a"]
                v += aw.T @ st["t"]
        d = np.sqrt(np.maximum(np.diag(M), 1e-300))
        coef = np.linalg.lstsq(M / np.outer(d, d), v / d, rcond=1e-12)[0] / d
        kern = np.tensordot(coef[:nb], basis, axes=1)
        for k, st in enumerate(stamps):
            chi[k] = float(np.mean(((st["a"] @ coef - st["t"]) * st["w"]) ** 2))
        new = use & (chi <= clip * max(float(np.median(chi[use])), 1.0))
        if new.sum() >= 1 and not np.array_equal(new, use) and it < 3:
            use = new
    weights(kern)
    npix = sum(len(st["t"]) for st, u in zip(stamps, use, strict=True) if u)
    ss = sum(float(np.sum(((st["a"] @ coef - st["t"]) * st["w"]) ** 2)) for st, u in zip(stamps, use, strict=True) if u)
    return kern, float(coef[nb]), ss / max(1, npix - nb - 1), int(use.sum())
