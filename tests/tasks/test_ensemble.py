"""Ensemble differential photometry (tasks/ensemble.py) on a synthetic field with known per-frame offsets."""

from __future__ import annotations

import numpy as np

from openastro_parsl.tasks.lightcurve.ensemble import solve_ensemble


def _field(seed=3, n_frames=60, n_stars=25, offset_sigma=0.01):
    rng = np.random.default_rng(seed)
    true_mag = rng.uniform(11, 17.5, n_stars)
    err_of = 0.001 + 0.002 * 10 ** (0.4 * (true_mag - 13))  # photon-limited: 1 mmag bright, ~0.1 mag faint
    offsets = rng.normal(0, offset_sigma, n_frames)
    variable = 4  # a 0.2-mag pulsator among the comparison stars
    phase = rng.uniform(0, 2 * np.pi)
    frame, star, mag, err, crs = [], [], [], [], []
    for f in range(n_frames):
        seen = rng.uniform(size=n_stars) < 0.85  # not every star in every frame (edges, other cameras)
        for s in np.flatnonzero(seen):
            m = true_mag[s] + offsets[f] + rng.normal(0, err_of[s])
            if s == variable:
                m += 0.1 * np.sin(2 * np.pi * f / 7.3 + phase)
            if rng.uniform() < 0.01:  # cosmic ray on the star
                m -= 0.3
                crs.append((f, s))
            frame.append(f)
            star.append(1000 + s)
            mag.append(m)
            err.append(err_of[s])
    return (np.array(frame), np.array(star), np.array(mag), np.array(err)), offsets, variable


def test_offsets_recovered_within_their_errors():
    (frame, star, mag, err), offsets, variable = _field()
    sol = solve_ensemble(frame, star, mag, err, len(offsets))
    w = 1 / sol.offset_err**2
    truth = offsets - np.average(offsets, weights=w)  # the solution's gauge: zero weighted mean
    assert abs(np.average(sol.offset, weights=w)) < 1e-9
    pull = (sol.offset - truth) / sol.offset_err
    assert np.all(np.abs(pull) < 4), pull
    assert 0.6 < np.std(pull) < 1.5
    # an order of magnitude better than the 0.01-mag frame noise it removes
    assert np.std(sol.offset - truth) < 0.002
    assert np.all(sol.n_stars >= 10)


def test_variable_comparison_star_is_down_weighted():
    (frame, star, mag, err), offsets, variable = _field()
    sol = solve_ensemble(frame, star, mag, err, len(offsets))
    excess = dict(zip(sol.star_ids.tolist(), sol.star_excess, strict=True))
    assert excess[1000 + variable] > 0.05
    others = [v for k, v in excess.items() if k != 1000 + variable]
    assert np.median(others) == 0.0


def test_frames_without_enough_stars_are_left_uncorrected():
    frame = np.array([0, 0, 0, 1, 1, 1, 2])
    star = np.array([1, 2, 3, 1, 2, 3, 1])
    mag = np.array([10.0, 11.0, 12.0, 10.1, 11.1, 12.1, 10.05])
    err = np.full(7, 0.01)
    sol = solve_ensemble(frame, star, mag, err, 4, min_stars=2)
    assert np.isfinite(sol.offset_err[:2]).all() and not np.isfinite(sol.offset_err[2:]).any()
    assert sol.offset[2] == 0.0 and sol.offset[3] == 0.0 and sol.n_stars[3] == 0
    assert abs((sol.offset[1] - sol.offset[0]) - 0.1) < 1e-9


def test_stars_seen_once_do_not_count():
    frame = np.array([0, 0, 1, 1, 1])
    star = np.array([1, 2, 1, 2, 9])  # star 9 appears once
    mag = np.array([10.0, 11.0, 10.2, 11.2, 15.0])
    sol = solve_ensemble(frame, star, mag, np.full(5, 0.01), 2)
    assert sol.n_stars.tolist() == [2, 2]
    assert abs((sol.offset[1] - sol.offset[0]) - 0.2) < 1e-9
