"""What a plate solver starts from: the frame's stars (sep detections) and the header's pointing/scale hints.

Both engines solve from the same source list, so a difference between them is a difference of matcher,
never of detection. Centroids are sep's windowed positions (SExtractor's XWIN), which are several times
more precise than isophotal barycentres on faint stars and matter for a sub-0.1-pixel astrometric fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

if TYPE_CHECKING:
    from astropy.io import fits


CENTROID_FLOOR_PIX = 0.05  # pixelisation, PSF asymmetry, catalogue errors: no centroid is better than this


@dataclass(frozen=True)
class Sources:
    """Detected stars, brightest first; x, y are 0-based pixel coordinates (numpy/astropy convention)."""

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    shape: tuple[int, int]  # (ny, nx) of the frame
    err: np.ndarray | None = None  # 1-sigma centroid uncertainty per axis (pixels); None: all equal

    def __len__(self) -> int:
        return len(self.x)

    @property
    def xy(self) -> np.ndarray:
        return np.column_stack([self.x, self.y])

    def brightest(self, n: int) -> "Sources":
        return Sources(self.x[:n], self.y[:n], self.flux[:n], self.shape, None if self.err is None else self.err[:n])

    def weights(self, index: np.ndarray) -> np.ndarray | None:
        """Inverse-variance weights of the given detections (None when uncertainties are unknown)."""
        return None if self.err is None else 1.0 / self.err[index] ** 2


def detect_sources(data: np.ndarray, mask: np.ndarray | None = None, *, nsigma: float = 5.0, minarea: int = 5,
                   max_sources: int = 300, edge_pix: float = 2.0) -> Sources:
    """sep background + extraction, windowed centroids, sorted by flux; masked pixels are ignored.

    Sources closer to the border than ``edge_pix`` or 1.5 times their own FWHM are dropped: the cut-off PSF
    biases their centroids by up to a pixel.
    """
    import sep

    img = np.ascontiguousarray(data, dtype=np.float64)
    bad = None if mask is None else np.ascontiguousarray(mask != 0)
    finite = np.isfinite(img)
    if not finite.all():
        bad = ~finite if bad is None else (bad | ~finite)
        img = np.where(finite, img, np.nanmedian(img[finite]) if finite.any() else 0.0)
    ny, nx = img.shape
    box = int(max(16, min(64, min(ny, nx) // 4)))
    bkg = sep.Background(img, mask=bad, bw=box, bh=box)
    sub = img - bkg.back()
    rms = bkg.rms()
    objs = sep.extract(sub, nsigma, err=rms, mask=bad, minarea=minarea, deblend_cont=0.005)
    if len(objs) == 0:
        return Sources(np.empty(0), np.empty(0), np.empty(0), (ny, nx))
    objs = objs[np.isfinite(objs["flux"]) & (objs["flux"] > 0)]
    # Windowed centroid with a Gaussian of the object's own size (SExtractor: sigma = 2 r_half / 2.35).
    rhalf, _ = sep.flux_radius(sub, objs["x"], objs["y"], 6.0 * objs["a"], 0.5, normflux=objs["flux"], subpix=5)
    sig = np.clip(2.0 * np.nan_to_num(rhalf, nan=1.0) / 2.35, 0.5, 10.0)
    xw, yw, wflag = sep.winpos(sub, objs["x"], objs["y"], sig)
    use_iso = (wflag != 0) | ~np.isfinite(xw) | ~np.isfinite(yw) | (np.hypot(xw - objs["x"], yw - objs["y"]) > 2.0)
    x = np.where(use_iso, objs["x"], xw)
    y = np.where(use_iso, objs["y"], yw)
    margin = np.maximum(edge_pix, 1.5 * 2.355 * sig)
    keep = (x >= margin) & (x <= nx - 1 - margin) & (y >= margin) & (y <= ny - 1 - margin)
    x, y, flux, sig = x[keep], y[keep], np.asarray(objs["flux"][keep], dtype=float), sig[keep]
    # Centroid error ~ PSF sigma / SNR (background-limited), with a floor for pixelisation and the catalogue:
    # faint stars then weigh as little in the WCS fit as their centroids deserve.
    radius = np.clip(2.5 * sig, 2.0, 15.0)
    aflux, aerr, _ = sep.sum_circle(sub, x, y, radius, err=rms, subpix=1)
    snr = np.where((aerr > 0) & (aflux > 0), aflux / np.where(aerr > 0, aerr, 1.0), 1.0)
    err = np.hypot(sig / np.maximum(snr, 1.0), CENTROID_FLOOR_PIX)
    order = np.argsort(-flux, kind="stable")[:max_sources]
    return Sources(x[order], y[order], flux[order], (ny, nx), err[order])


@dataclass(frozen=True)
class Hints:
    """What the telescope says about where it pointed and its pixel scale (either may be unknown)."""

    ra: float | None = None
    dec: float | None = None
    scale_arcsec: float | None = None

    @property
    def has_position(self) -> bool:
        return self.ra is not None and self.dec is not None


def _number(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _angle(value: Any, hours: bool) -> float | None:
    """Degrees from a number (degrees) or a sexagesimal string (hours when ``hours``)."""
    v = _number(value)
    if v is not None:
        return v
    if not isinstance(value, str) or not value.strip():
        return None
    import astropy.units as u
    from astropy.coordinates import Angle

    try:
        return float(Angle(value.strip(), unit=u.hourangle if hours else u.deg).deg)
    except (ValueError, TypeError):
        return None


def hints_from(header: fits.Header, records: Mapping[str, Mapping[str, Any]] | None = None) -> Hints:
    """Pointing and scale: the ingest records first (already translated per instrument), then header cards.

    Header cards understood: RA/DEC (degrees), OBJCTRA/OBJCTDEC (sexagesimal, MaxIm DL and DSS), PIXSCALE /
    SECPIX / SCALE (arcsec/px), XPIXSZ (um, binning included as MaxIm DL
    writes it) with FOCALLEN (mm),
    and the DSS pair PLTSCALE (arcsec/mm) with XPIXELSZ (um).
    """
    records = records or {}
    exp = records.get("exposure") or {}
    inst = records.get("instrument") or {}
    ra, dec = _number(exp.get("ra")), _number(exp.get("dec"))
    if ra is None or dec is None:
        ra, dec = None, None
        for rk, dk, hours in (("RA", "DEC", False), ("OBJCTRA", "OBJCTDEC", True)):
            if rk in header and dk in header:
                r = _angle(header[rk], hours=hours and isinstance(header[rk], str))
                d = _angle(header[dk], hours=False)
                if r is not None and d is not None and -90 <= d <= 90:
                    ra, dec = r % 360.0, d
                    break
    scale = _number(inst.get("pixel_scale"))
    if scale is None:
        for key in ("PIXSCALE", "SECPIX", "SCALE"):
            scale = _number(header.get(key))
            if scale:
                break
    if not scale:
        px, fl = _number(header.get("XPIXSZ")), _number(header.get("FOCALLEN"))
        if px and fl:
            scale = 206.264806 * px / fl
    if not scale:
        plt, px = _number(header.get("PLTSCALE")), _number(header.get("XPIXELSZ"))
        if plt and px:
            scale = plt * px / 1000.0
    return Hints(ra, dec, scale if scale and scale > 0 else None)
