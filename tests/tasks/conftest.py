"""Fixtures shared by the science-task tests (builders: ``tests/truthdata.py``)."""

from __future__ import annotations

import pytest
from truthdata import demo_lightcurves


@pytest.fixture(scope="session")
def truth_lightcurves(demo):
    """``(lightcurves, injected)``: the demo's light curves as ``makeLightcurve`` makes them from ``src`` tables
    synthesised from the truth (seed 0), ``{(target, band): Table}``, and the outliers injected into them,
    ``{(target, instrument, exposure): delta_mag}``. Made once per session; treat them as read-only."""
    return demo_lightcurves(demo.truth, seed=0)
