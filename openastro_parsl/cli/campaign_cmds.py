"""`openastro-butler` commands that set up a campaign: fields, targets and reference catalogues."""

from __future__ import annotations

from .butler import main  # noqa: F401
