"""astro.psf: the Moffat profile, its pixel integrals, point-source images."""

from __future__ import annotations

import numpy as np
import pytest

from openastro_parsl.astro.psf import (
    FWHM_SIGMA,
    MoffatPSF,
    PixelQuadrature,
    moffat_alpha,
    moffat_fwhm,
    moffat_pixels,
    moffat_profile,
    render_moffat_stars,
)


def test_alpha_fwhm_and_half_maximum():
    for fwhm, beta in ((1.5, 2.5), (3.0, 3.0), (8.0, 4.5)):
        a = moffat_alpha(fwhm, beta)
        assert moffat_fwhm(a, beta) == pytest.approx(fwhm, rel=1e-14)
        assert moffat_profile((fwhm / 2) ** 2, a, beta) == pytest.approx(moffat_profile(0.0, a, beta) / 2, rel=1e-12)
    assert FWHM_SIGMA == pytest.approx(2.354820045, rel=1e-9)


def test_quadratures():
    for q in (PixelQuadrature.gauss_legendre(4), PixelQuadrature.midpoint(5)):
        assert q.weights.sum() == pytest.approx(1.0, abs=1e-15)
        assert np.all(np.abs(q.offsets) < 0.5)
        with pytest.raises(ValueError):
            q.offsets[0] = 0.0  # shared: read-only
    assert PixelQuadrature.gauss_legendre(3) is PixelQuadrature.gauss_legendre(3)
    v = np.random.default_rng(1).random((2, 5, 5))
    assert np.array_equal(PixelQuadrature.midpoint(5).integrate(v), v.mean(axis=(-1, -2)))


@pytest.mark.parametrize("fwhm", [1.5, 2.2, 4.0])
def test_pixel_integral_holds_the_flux_and_quadratures_agree(fwhm):
    beta = 3.0
    a = moffat_alpha(fwhm, beta)
    d = np.arange(-60, 61, dtype=float)
    gl = moffat_pixels(d[None, :] - 0.3, d[:, None] + 0.2, a, beta)
    # beyond 60 px a beta = 3 Moffat of this width holds (alpha/60)^4-ish of its flux
    assert gl.sum() == pytest.approx(1.0, abs=2e-4)
    fine = moffat_pixels(d[None, :] - 0.3, d[:, None] + 0.2, a, beta, PixelQuadrature.gauss_legendre(16))
    assert np.abs(gl - fine).max() < 1e-5 * fine.max()  # 4 x 4 Gauss-Legendre: converged
    mid = moffat_pixels(d[None, :] - 0.3, d[:, None] + 0.2, a, beta, PixelQuadrature.midpoint(5))
    assert 1e-4 * fine.max() < np.abs(mid - fine).max() < 1e-2 * fine.max()  # 5 x 5 midpoint: within 1 %
    # sampling at pixel centres instead of integrating is visibly wrong when undersampled
    sampled = moffat_profile((d[None, :] - 0.3) ** 2 + (d[:, None] + 0.2) ** 2, a, beta)
    assert np.abs(sampled - fine).max() > (0.01 if fwhm < 2.5 else 0.0) * fine.max()


def test_moffat_psf_stamp_is_centred_and_symmetric():
    psf = MoffatPSF(3.0, 3.5, "fit", 4)
    s = psf.stamp(8)
    assert s.shape == (17, 17) and np.unravel_index(np.argmax(s), s.shape) == (8, 8)
    assert np.allclose(s, s[::-1, ::-1], rtol=0, atol=1e-15) and np.allclose(s, s.T, rtol=0, atol=1e-15)
    assert psf.alpha == pytest.approx(moffat_alpha(3.0, 3.5), rel=1e-14)
    shifted = psf.stamp(8, 0.5, 0.0)
    assert shifted[8, 8] == pytest.approx(shifted[8, 9], rel=1e-12)


def test_render_puts_each_star_where_moffat_pixels_says():
    shape, fwhm, beta, flux = (40, 50), 2.5, 3.0, 1000.0
    q = PixelQuadrature.gauss_legendre(3)
    img = render_moffat_stars(shape, [20.3, -100.0], [15.6, 5.0], [flux, 1e6], fwhm, beta, radius=12, quadrature=q)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    ref = flux * moffat_pixels(xx - 20.3, yy - 15.6, moffat_alpha(fwhm, beta), beta, q)
    near = (np.abs(xx - 20) <= 12) & (np.abs(yy - 16) <= 12)
    assert np.allclose(img[near], ref[near], rtol=1e-12, atol=1e-12)
    assert np.all(img[~near] == 0.0)  # outside the stamp, and the star far off the frame, add nothing
    assert img.sum() == pytest.approx(flux, rel=0.01)


def _simulator_reference(shape, x, y, flux, fwhm, beta, R, n, chunk):
    """The simulator's renderer as it was written before it moved to astro.psf (kept to pin its pixels)."""
    gx, gw = np.polynomial.legendre.leggauss(n)
    sub, w2 = gx / 2.0, np.outer(gw / 2.0, gw / 2.0)
    ny, nx = shape
    x, y, flux = (np.atleast_1d(np.asarray(a, dtype=float)) for a in (x, y, flux))
    pad = 2 * R + 1
    canvas = np.zeros((ny + 2 * pad) * (nx + 2 * pad))
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    norm = (beta - 1.0) / (np.pi * alpha**2)
    d = np.arange(-R, R + 1)
    for s in range(0, len(x), chunk):
        xs, ys, fs = x[s:s + chunk], y[s:s + chunk], flux[s:s + chunk]
        ix, iy = np.rint(xs).astype(int), np.rint(ys).astype(int)
        u = (ix[:, None] + d[None, :] - xs[:, None])[:, :, None] + sub[None, None, :]
        v = (iy[:, None] + d[None, :] - ys[:, None])[:, :, None] + sub[None, None, :]
        r2 = (v[:, :, None, :, None] ** 2 + u[:, None, :, None, :] ** 2) / alpha**2
        val = np.einsum("nyxab,ab->nyx", norm * (1.0 + r2) ** (-beta), w2) * fs[:, None, None]
        rows = (iy[:, None] + d[None, :] + pad)[:, :, None]
        cols = (ix[:, None] + d[None, :] + pad)[:, None, :]
        canvas += np.bincount((rows * (nx + 2 * pad) + cols).ravel(), weights=val.ravel(), minlength=canvas.size)
    return canvas.reshape(ny + 2 * pad, nx + 2 * pad)[pad:-pad, pad:-pad]


def test_simulator_pixels_are_unchanged():
    """sim.render.star_image goes through render_moffat_stars and gives the very same bits as before."""
    from openastro_parsl.sim.render import stamp_radius, star_image

    rng = np.random.default_rng(7)
    shape, fwhm, beta = (70, 90), 1.7, 3.3
    x, y, f = rng.uniform(-5, 95, 130), rng.uniform(-5, 75, 130), rng.uniform(10, 1e5, 130)
    ref = _simulator_reference(shape, x, y, f, fwhm, beta, stamp_radius(fwhm), 5, 48)
    assert np.array_equal(star_image(shape, x, y, f, fwhm, beta), ref)
