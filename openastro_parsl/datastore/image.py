"""The in-memory image every image task passes around: pixels, mask, variance, header (with its WCS).

One class rather than bare arrays so the mask and variance planes travel with the pixels through every
stage, and the WCS is always the one in the header that is written back out.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # astropy loads in ~0.5 s; a planner importing a task that names Image must not pay it
    from astropy.io import fits
    from astropy.wcs import WCS

# Mask plane bits (shared by every task that sets or reads the mask).
_WCS_KEY = re.compile(r"^(CTYPE|CRVAL|CRPIX|CDELT|CUNIT|CD\d_\d|PC\d_\d|A_|B_|AP_|BP_|WCSAXES|LONPOLE|LATPOLE|RADESYS|EQUINOX)")
MASK_BITS = {"BAD": 1, "SAT": 2, "CR": 4, "EDGE": 8, "NO_DATA": 16}


def _empty_header() -> fits.Header:
    from astropy.io import fits

    return fits.Header()


@dataclass
class Image:
    """Pixels with their header (and WCS), an optional mask (``MASK_BITS``) and an optional variance plane."""

    data: np.ndarray
    header: fits.Header = field(default_factory=_empty_header)
    mask: np.ndarray | None = None
    variance: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def wcs(self) -> WCS | None:
        """The celestial WCS in the header, or None when the header has none (a frame to plate-solve)."""
        if "CTYPE1" not in self.header or "CTYPE2" not in self.header:
            return None
        from astropy.wcs import WCS, FITSFixedWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            w = WCS(self.header, naxis=2)
        return w if w.has_celestial else None

    def set_wcs(self, wcs: WCS) -> None:
        """Replace whatever WCS the header had (including SIP terms) by ``wcs``."""
        for key in [k for k in self.header if _WCS_KEY.match(k)]:
            del self.header[key]
        self.header.update(wcs.to_header(relax=True))

    def copy(self) -> "Image":
        return Image(self.data.copy(), self.header.copy(),
                     None if self.mask is None else self.mask.copy(),
                     None if self.variance is None else self.variance.copy())
