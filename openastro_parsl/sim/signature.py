"""Raw mode: each camera's instrument signature, the thing ISR must take out again.

The default survey is "already reduced" (flat response, no dark current, a constant bias at most). In raw
mode (``generate_survey(..., raw=True)``) every frame also carries, per instrument:

- a bias of ``level`` ADU plus a fixed read pattern (row ripple and column offsets), the same in every read;
- dark current: ``dark_e_per_s`` everywhere and a few hot pixels of 5-60 e-/s;
- a flat-field response: vignetting (``1 - vignetting * r^2``, r = 1 in the corners), 2-3 dust donuts
  (annuli 8-25 % deep), 1 % pixel-to-pixel response, a few dead pixels at 2 %; normalised to median 1, so the
  survey's truth (electrons of an ideal detector of that median response) is what ISR must recover.

All of it is drawn from the instrument's own random stream (not the survey's others), and saved beside the
truth (``signature_<instrument>.npz``) so tests compare masters with the true maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .instruments import Instrument

__all__ = ["RAW_SETTINGS", "RawSettings", "Signature", "make_signature"]


@dataclass(frozen=True)
class RawSettings:
    """The signature's size per camera (the draws within it come from the seed)."""

    bias_level: float      # ADU
    pattern_adu: float     # amplitude of the row ripple and column offsets, ADU
    dark_e_per_s: float    # e-/s/pixel
    vignetting: float      # response lost in the corners
    n_donuts: int
    hot_fraction: float
    dead_fraction: float


RAW_SETTINGS = {
    "lco1m": RawSettings(bias_level=480.0, pattern_adu=1.5, dark_e_per_s=0.02, vignetting=0.10, n_donuts=2,
                         hot_fraction=4e-4, dead_fraction=2e-4),
    "slt40": RawSettings(bias_level=310.0, pattern_adu=2.0, dark_e_per_s=0.05, vignetting=0.18, n_donuts=3,
                         hot_fraction=6e-4, dead_fraction=3e-4),
    "ota80": RawSettings(bias_level=100.0, pattern_adu=3.0, dark_e_per_s=0.10, vignetting=0.30, n_donuts=3,
                         hot_fraction=8e-4, dead_fraction=3e-4),
}


@dataclass
class Signature:
    """True per-pixel maps of one camera: bias (ADU), dark rate (e-/s), flat (median 1), and the defects."""

    instrument: str
    bias: np.ndarray
    dark_e_per_s: np.ndarray
    flat: np.ndarray
    hot: np.ndarray      # bool
    dead: np.ndarray     # bool
    donuts: list[dict]

    def save(self, path: Path) -> None:
        np.savez_compressed(path, bias=self.bias, dark_e_per_s=self.dark_e_per_s, flat=self.flat, hot=self.hot,
                            dead=self.dead)

    def summary(self, settings: RawSettings) -> dict:
        return {"bias_level_adu": settings.bias_level, "pattern_adu": settings.pattern_adu,
                "dark_e_per_s": settings.dark_e_per_s, "vignetting": settings.vignetting,
                "donuts": self.donuts, "n_hot": int(self.hot.sum()), "n_dead": int(self.dead.sum()),
                "flat_range": [float(self.flat.min()), float(self.flat.max())]}


def _donut(yy, xx, cy, cx, r_out, r_in, depth):
    """A dust shadow: an out-of-focus annulus of lower response, with soft edges."""
    r = np.hypot(yy - cy, xx - cx)
    edge = 1.5
    outer = 1.0 / (1.0 + np.exp((r - r_out) / edge * 3.0))
    inner = 1.0 / (1.0 + np.exp((r - r_in) / edge * 3.0))
    return 1.0 - depth * (outer - 0.7 * inner)


def make_signature(rng: np.random.Generator, inst: Instrument, settings: RawSettings) -> Signature:
    """Draw one camera's bias, dark and flat maps."""
    ny, nx = inst.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    rows = settings.pattern_adu * np.sin(2 * np.pi * yy[:, :1] / rng.uniform(9.0, 23.0))
    cols = rng.normal(0.0, settings.pattern_adu * 0.5, (1, nx))
    bias = settings.bias_level + rows + cols + np.zeros((ny, nx))
    n = ny * nx
    hot = np.zeros(n, bool)
    hot[rng.choice(n, max(1, int(round(settings.hot_fraction * n))), replace=False)] = True
    hot = hot.reshape(ny, nx)
    dark = np.full((ny, nx), settings.dark_e_per_s)
    dark[hot] = rng.uniform(5.0, 60.0, int(hot.sum()))
    cy, cx = (ny - 1) / 2.0, (nx - 1) / 2.0
    r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / (cy ** 2 + cx ** 2)
    flat = 1.0 - settings.vignetting * r2
    donuts = []
    for _ in range(settings.n_donuts):
        r_out = float(rng.uniform(0.04, 0.08) * min(nx, ny))
        c = (float(rng.uniform(0.15, 0.85) * ny), float(rng.uniform(0.15, 0.85) * nx))
        depth = float(rng.uniform(0.08, 0.25))
        flat *= _donut(yy, xx, c[0], c[1], r_out, 0.5 * r_out, depth)
        donuts.append({"y": c[0], "x": c[1], "r_out": r_out, "r_in": 0.5 * r_out, "depth": depth})
    flat *= 1.0 + rng.normal(0.0, 0.01, (ny, nx))
    dead = np.zeros(n, bool)
    dead[rng.choice(n, max(1, int(round(settings.dead_fraction * n))), replace=False)] = True
    dead = dead.reshape(ny, nx) & ~hot
    flat[dead] = 0.02
    flat /= float(np.median(flat))
    return Signature(inst.name, bias, dark, flat, hot, dead, donuts)
