"""`openastro-butler` commands for calibration frames and master calibrations."""

from __future__ import annotations

from .butler import main  # noqa: F401
