"""Long `where` expressions (a script writing its data IDs out one by one) run instead of failing in SQLite or
PostgreSQL."""

import pytest
from conftest import populate

from openastro_parsl.butler import Butler

pytestmark = pytest.mark.both_backends  # PostgreSQL has limits of its own (bind parameters, expression depth)


def _many_exposures(root):
    butler = populate(Butler.create(root / "repo"))
    butler.registry.sync_dimension_records("exposure", [
        {"instrument": "lco1m", "id": i, "band": "gr"[i % 2], "field": "demo1", "day_obs": 20260400, "mjd": 61200.0 + i,
         "exptime": 30.0} for i in range(100, 1700)])
    return butler


@pytest.fixture
def many_exposures(read_only_repo):
    """``populated`` and 1,600 more exposures, made once per backend: the tests only query it."""
    return read_only_repo("many-exposures", _many_exposures)


def _ids(butler, where):
    return sorted(d["exposure"] for d in butler.query_data_ids(["exposure"], where))


def test_thousands_of_or_equalities(many_exposures):
    wanted = list(range(100, 1600))
    where = " OR ".join(f"exposure = {i}" for i in wanted)
    assert _ids(many_exposures, where) == wanted


def test_thousands_of_or_conjunctions(many_exposures):
    """Terms that cannot become one IN list: the OR tree is balanced so SQLite's depth limit is never reached."""
    wanted = list(range(100, 1600, 2))
    where = " OR ".join(f"(exposure = {i} AND band = '{'gr'[i % 2]}' AND instrument = 'lco1m')" for i in wanted)
    where += " OR (exposure = 101 AND band = 'g')"  # 101 is an r frame: must not match
    assert _ids(many_exposures, where) == wanted


def test_thousands_of_and_terms(many_exposures):
    where = "instrument = 'lco1m' AND " + " AND ".join(f"exposure != {i}" for i in range(100, 1650))
    assert _ids(many_exposures, where) == [1, 2, 3, 4] + list(range(1650, 1700))


def test_merged_equalities_keep_null_logic_and_mixed_terms(many_exposures):
    where = "exposure = 1 OR band = 'g' AND exposure < 5 OR exposure IN (3, 4) OR exposure = 1"
    assert _ids(many_exposures, where) == [1, 2, 3, 4]
