"""The three simulated cameras and their true (not header) properties.

The point of having three is heterogeneity: different pixel scales, orientations,
photometric systems (colour terms), gains, dtypes and FITS conventions, so that
ingest, astrometry and calibration code cannot get away with one hard-coded camera.
Everything the pipeline should *recover* (zero points, colour terms, WCS) is defined
here and echoed into truth.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .astro import Site

SITES = {
    "ctio": Site("Cerro Tololo", "lsc", -70.8049, -30.1674, 2198.0, 1.05),
    "saao": Site("Sutherland", "cpt", 20.8107, -32.3806, 1804.0, 1.25),
    "sso": Site("Siding Spring", "coj", 149.0709, -31.2733, 1164.0, 1.40),
    "mcdonald": Site("McDonald", "elp", -104.0153, 30.6801, 2070.0, 1.20),
    "lulin": Site("Lulin", "lul", 120.8733, 23.4686, 2862.0, 1.35),
    "backyard": Site("Backyard (Piedmont)", "byd", 7.6869, 45.0703, 240.0, 2.20),
}


@dataclass(frozen=True)
class Instrument:
    """True properties of one camera + telescope (per survey size)."""

    name: str
    telescope: str
    sites: tuple[str, ...]
    pixel_scale: float  # arcsec / px (true)
    rotation_deg: float  # position angle of +y axis, N through E
    flip: bool  # True: East to the right (parity flipped)
    shape: tuple[int, int]  # (ny, nx)
    gain: float  # e- / ADU
    read_noise: float  # e-
    bias_adu: float  # pedestal added to every pixel
    saturation_adu: float
    dtype: str  # numpy dtype of the stored image
    filters: dict[str, str]  # band -> physical filter name written to FILTER
    zero_points: dict[str, float]  # band -> e-/s for a mag-0 star above the atmosphere
    colour_terms: dict[str, float]  # band -> CT multiplying (g - r)
    extinction: dict[str, float]  # band -> mag / airmass
    exptime: dict[str, float]  # band -> seconds
    sky_dark: dict[str, float]  # band -> zenith dark-sky surface brightness, mag/arcsec^2
    psf_beta: float  # Moffat beta
    seeing_instrument: float  # arcsec, optics/guiding added in quadrature to the atmosphere
    pointing_jitter_arcsec: float
    rotation_jitter_deg: float
    wcs_fraction: float  # share of frames that carry a WCS in the header
    zp_night_jitter: float  # mag rms, night to night (transparency)
    extra: dict = field(default_factory=dict)

    @property
    def bands(self) -> list[str]:
        return list(self.filters)

    def site_objs(self) -> list[Site]:
        return [SITES[s] for s in self.sites]

    def cd_matrix(self, rotation_deg: float) -> np.ndarray:
        """CD matrix (deg/px) for a given rotation; parity from `flip`."""
        s = self.pixel_scale / 3600.0
        t = np.deg2rad(rotation_deg)
        cd = s * np.array([[-np.cos(t), np.sin(t)], [np.sin(t), np.cos(t)]])
        if self.flip:
            cd[:, 0] *= -1.0
        return cd

    def truth_summary(self) -> dict:
        return {
            "telescope": self.telescope,
            "sites": {k: {"name": SITES[k].name, "lon": SITES[k].lon, "lat": SITES[k].lat} for k in self.sites},
            "pixel_scale": self.pixel_scale,
            "rotation_deg": self.rotation_deg,
            "flip": self.flip,
            "shape": list(self.shape),
            "gain": self.gain,
            "read_noise": self.read_noise,
            "bias_adu": self.bias_adu,
            "saturation_adu": self.saturation_adu,
            "dtype": self.dtype,
            "bands": self.bands,
            "filters": dict(self.filters),
            "colour_terms": dict(self.colour_terms),
            "zero_points": dict(self.zero_points),
            "extinction": dict(self.extinction),
            "exptime": dict(self.exptime),
            "psf": {"model": "moffat", "beta": self.psf_beta},
            "wcs_fraction": self.wcs_fraction,
            **self.extra,
        }


_SHAPES = {
    "small": {"lco1m": (256, 256), "slt40": (128, 128), "ota80": (192, 192)},
    "medium": {"lco1m": (512, 512), "slt40": (256, 256), "ota80": (384, 384)},
}


def make_instruments(size: str) -> dict[str, Instrument]:
    """Instrument definitions; only the detector size depends on `size`."""
    shapes = _SHAPES[size]
    lco1m = Instrument(
        name="lco1m",
        telescope="LCO-1m",
        sites=("ctio", "saao", "sso", "mcdonald"),
        pixel_scale=0.39,
        rotation_deg=0.0,
        flip=False,
        shape=shapes["lco1m"],
        gain=1.6,
        read_noise=8.0,
        bias_adu=0.0,
        saturation_adu=65535.0,
        dtype="float32",
        filters={"g": "gp", "r": "rp"},
        zero_points={"g": 24.70, "r": 24.60},
        colour_terms={"g": 0.035, "r": 0.012},
        extinction={"g": 0.18, "r": 0.10},
        exptime={"g": 20.0, "r": 15.0},
        sky_dark={"g": 21.8, "r": 20.8},
        psf_beta=3.5,
        seeing_instrument=0.6,
        pointing_jitter_arcsec=2.0,
        rotation_jitter_deg=0.1,
        wcs_fraction=1.0,
        zp_night_jitter=0.02,
    )
    slt40 = Instrument(
        name="slt40",
        telescope="SLT-0.4m",
        sites=("lulin", "ctio", "saao"),
        pixel_scale=0.9,
        rotation_deg=90.0,
        flip=True,
        shape=shapes["slt40"],
        gain=1.4,
        read_noise=9.5,
        bias_adu=0.0,
        saturation_adu=65535.0,
        dtype="float32",
        filters={"g": "SDSS-g'", "r": "SDSS-r'"},
        zero_points={"g": 22.75, "r": 22.60},
        colour_terms={"g": 0.060, "r": -0.040},
        extinction={"g": 0.20, "r": 0.11},
        exptime={"g": 40.0, "r": 30.0},
        sky_dark={"g": 21.5, "r": 20.6},
        psf_beta=3.0,
        seeing_instrument=1.4,
        pointing_jitter_arcsec=4.0,
        rotation_jitter_deg=0.1,
        wcs_fraction=0.9,
        zp_night_jitter=0.02,
    )
    # MaxIm DL style: scale derivable from XPIXSZ (um) and FOCALLEN (mm).
    ota_pix_um, ota_focal_mm = 3.76, 408.0
    ota80 = Instrument(
        name="ota80",
        telescope="Amateur 80mm OTA",
        sites=("backyard",),
        pixel_scale=1.9,
        rotation_deg=37.0,
        flip=False,
        shape=shapes["ota80"],
        gain=1.25,
        read_noise=8.0,
        bias_adu=100.0,
        saturation_adu=65535.0,
        dtype="uint16",
        filters={"g": "G", "r": "R"},
        zero_points={"g": 20.40, "r": 20.30},
        colour_terms={"g": 0.180, "r": -0.110},
        extinction={"g": 0.25, "r": 0.15},
        exptime={"g": 180.0, "r": 120.0},
        sky_dark={"g": 20.4, "r": 19.8},
        psf_beta=2.8,
        seeing_instrument=2.6,
        pointing_jitter_arcsec=6.0,
        rotation_jitter_deg=0.1,
        wcs_fraction=0.5,
        zp_night_jitter=0.04,
        extra={
            "xpixsz_um": ota_pix_um,
            "focallen_mm": ota_focal_mm,
            "header_pixel_scale": 206.264806 * ota_pix_um / ota_focal_mm,
        },
    )
    return {i.name: i for i in (lco1m, slt40, ota80)}
