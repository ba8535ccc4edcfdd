"""astro.ephemeris: the weighted linear ephemeris fit."""

from __future__ import annotations

import numpy as np
import pytest

from openastro_parsl.astro.ephemeris import fit_linear_ephemeris


def test_recovers_a_known_ephemeris_with_honest_errors():
    rng = np.random.default_rng(5)
    epochs = np.arange(-6, 7)
    err = rng.uniform(0.0005, 0.002, epochs.size)
    t0, period = 2461100.123, 2.79933
    pulls = []
    for _ in range(300):
        t = t0 + period * epochs + rng.normal(0, err)
        e = fit_linear_ephemeris(epochs, t, err)
        pulls.append(((e.t0 - t0) / e.t0_err, (e.period - period) / e.period_err))
    pulls = np.array(pulls)
    assert np.allclose(pulls.mean(axis=0), 0, atol=0.2) and np.allclose(pulls.std(axis=0), 1, atol=0.15)
    assert e.n == 13 and e.dof == 11 and e.chi2_red == pytest.approx(e.chi2 / 11)
    assert np.allclose(e.predict([0, 1]), [e.t0, e.t0 + e.period])


def test_weights_and_exact_fit():
    e = fit_linear_ephemeris([0, 1, 2], [1.0, 3.0, 5.0 + 1.0], [1.0, 1.0, 1e-6])
    assert e.t0 + 2 * e.period == pytest.approx(6.0, abs=1e-6)  # the precise point pins the line
    two = fit_linear_ephemeris([0, 5], [1.0, 11.0], [0.1, 0.1])
    assert (two.t0, two.period, two.dof) == (pytest.approx(1.0), pytest.approx(2.0), 1) and two.chi2 < 1e-20
    with pytest.raises(ValueError, match="two"):
        fit_linear_ephemeris([0], [1.0], [0.1])
