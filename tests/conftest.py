"""Shared fixtures: fresh repositories and small FITS frames made on the fly."""

from __future__ import annotations

import pytest

from openastro_parsl.butler import Butler


@pytest.fixture
def butler(tmp_path) -> Butler:
    return Butler.create(tmp_path / "repo")


@pytest.fixture
def populated(butler) -> Butler:
    """A repo with two instruments, two bands, one field and six exposures (ids 1..6)."""
    r = butler.registry
    r.sync_dimension_records("instrument", [{"name": "lco1m", "pixel_scale": 0.39}, {"name": "ota80", "pixel_scale": 1.9}])
    r.sync_dimension_records("band", [{"name": "g"}, {"name": "r"}])
    r.sync_dimension_records("field", [{"name": "demo1", "ra": 150.1, "dec": 2.2}, {"name": "demo2", "ra": 210.5, "dec": -5.3}])
    exps = []
    for i in range(1, 7):
        exps.append({"instrument": "lco1m" if i <= 4 else "ota80", "id": i, "band": "gr"[i % 2],
                     "field": "demo1" if i != 6 else "demo2", "day_obs": 20260300 + i, "mjd": 61100.0 + i,
                     "exptime": 30.0 * i})
    r.sync_dimension_records("exposure", exps)
    return butler


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The small demo survey (seed 42), made and ingested once per test session. Treat it as read-only
    apart from new output runs."""
    from openastro_parsl.demo import make_demo_repo

    return make_demo_repo(tmp_path_factory.mktemp("demo") / "repo", seed=42, size="small")

