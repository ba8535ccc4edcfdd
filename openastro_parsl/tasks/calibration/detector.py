"""What ISR and the masters need to know about the detector of a frame, from its header.

Bias frames have no exposure time and no filter, so ``astro.observation.observation_info`` (made for science
frames) refuses them; here only the detector cards are read, through the same ingest translators, so every
camera's spelling (GAIN or EGAIN, RDNOISE, SATURATE...) is the one ingest knows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import OpenAstroError
from ...ingest.translator import Translator, load_translators

if TYPE_CHECKING:
    from astropy.io import fits

__all__ = ["Detector", "detector_info", "translator_for"]


@lru_cache(maxsize=1)
def _translators() -> tuple[Translator, ...]:
    return tuple(load_translators())


def translator_for(header: fits.Header) -> Translator | None:
    """The first packaged translator that matches ``header`` (the catch-all last), or None."""
    return next((t for t in _translators() if t.matches(header)), None)


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


@dataclass(frozen=True)
class Detector:
    """Gain (e-/ADU), read noise (e-; None when the header has none: MaxIm DL writes none), saturation (ADU),
    exposure time (s), and whether the observatory already reduced the frame (LCO BANZAI e91: ISR leaves it)."""

    gain: float
    read_noise: float | None
    saturation_adu: float
    exptime: float
    reduced: bool


def detector_info(header: fits.Header, data: Any = None, *, default_gain: float | None = None,
                  default_read_noise: float | None = None, default_saturation: float | None = None,
                  where: str = "") -> Detector:
    """The detector of the frame with ``header``; a missing gain without a default is one clear error."""
    prefix = f"{where}: " if where else ""
    tr = translator_for(header)

    def card(key: str) -> float | None:
        return _float(tr.value(header, key)) if tr is not None else None

    gain = card("gain") or default_gain
    if not gain or gain <= 0:
        raise ValueError(f"{prefix}no gain in the header and no default_gain configured")
    read_noise = card("read_noise")
    read_noise = read_noise if read_noise is not None else default_read_noise
    saturation = card("saturation") or default_saturation
    if saturation is None:
        dtype = np.asarray(data).dtype if data is not None else None
        unsigned16 = header.get("BITPIX") == 16 and header.get("BZERO") == 32768
        saturation = (float(np.iinfo(dtype).max) if dtype is not None and np.issubdtype(dtype, np.integer)
                      else 65535.0 if unsigned16 else float("inf"))
    exptime = card("exptime") or 0.0
    reduced = False
    if tr is not None:
        try:
            reduced = bool(getattr(tr.translate(header), "reduced", False))
        except OpenAstroError:  # a frame ingest took is translatable; a bare test header may not be
            reduced = False
    return Detector(float(gain), None if read_noise is None else float(read_noise), float(saturation),
                    float(exptime), reduced)
