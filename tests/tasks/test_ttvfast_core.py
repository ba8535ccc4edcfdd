"""TTVFast's C core called directly gives what the ttvfast package's own entry point gives."""

from __future__ import annotations

import numpy as np
import pytest
import ttvfast
from ttvfast.models import Planet, planets_to_params

from openastro_parsl.tasks.lightcurve import ttvfast_core


def _systems(n, seed=3):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        k = int(rng.integers(1, 4))
        periods = np.sort(rng.uniform(3.0, 60.0, k)) * np.cumprod(np.r_[1.0, rng.uniform(1.3, 2.2, k - 1)])
        yield [Planet(float(rng.uniform(1e-6, 3e-4)), float(p), float(rng.uniform(0, 0.2)), 90.0, 0.0,
                      float(rng.uniform(0, 360)), float(rng.uniform(0, 360))) for p in periods], float(rng.uniform(0.5, 1.5))


def _package(planets, mstar, dt, total):
    pos = ttvfast.ttvfast(planets, mstar, 0.0, dt, total)["positions"]
    keep = np.asarray(pos[2]) != -2.0
    return {name: np.asarray(col)[keep] for name, col in zip(ttvfast_core.TRANSIT_DTYPE.names, pos, strict=True)}


@pytest.mark.parametrize("direct", [True, False], ids=["C core", "package fallback"])
def test_events_match_the_package_for_random_systems(direct, monkeypatch):
    if not direct:
        monkeypatch.setattr(ttvfast_core, "_core", lambda: None)
    elif ttvfast_core._core() is None:
        pytest.skip("this build of ttvfast does not export TTVFast_main")
    for planets, mstar in _systems(12):
        dt, total = 0.05 * planets[0].period, 700.0
        want = _package(planets, mstar, dt, total)
        # a first guess of 8 events is far too small: the buffer grows until every event fits
        got = ttvfast_core.transit_events(planets_to_params(mstar, planets), dt, 0.0, total, len(planets), 8)
        assert len(got) == len(want["time"]) > 10
        for name in ttvfast_core.TRANSIT_DTYPE.names:
            np.testing.assert_array_equal(got[name], want[name])


def test_what_ttvfast_refuses_is_a_value_error():
    # twelve planets on one orbit: TTVFast's Jacobi conversion finds an unbound one and stops with an error status
    params = planets_to_params(1.0, [Planet(1e-4, 1.0, 0.1, 90.0, 0.0, 0.0, 0.0)] * 12)
    with pytest.raises(ValueError, match="TTVFast: hyperbolic orbit"):
        ttvfast_core.transit_events(params, 0.05, 0.0, 10.0, 12, 20)
