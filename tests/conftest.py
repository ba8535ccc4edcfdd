"""Shared fixtures: fresh repositories and small FITS frames made on the fly, on either registry backend.

Every test runs on SQLite. Tests marked ``both_backends`` (and those listed in ``BOTH_BACKENDS``) run a second
time with ``registry_backend == "postgresql"``: every repository they create gets its own new database on the
PostgreSQL server of ``bin/postgres-local`` (or ``$OPENASTRO_TEST_POSTGRES``), dropped when the test ends. A server
that is not running fails those cases, naming the command that starts it; ``OPENASTRO_NO_POSTGRES=1`` makes them
skip instead (for a machine without one).
"""

from __future__ import annotations

import os
import uuid

import pytest

from openastro_parsl.butler import REGISTRY_SERVER_ENV, Butler

BACKENDS = ("sqlite", "postgresql")
PG_URL = os.environ.get("OPENASTRO_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:55432")
# Tests of files owned elsewhere that also run on PostgreSQL: the planner's whole module, a failure then its resume
# through Parsl HTEX (on the local site only), the run lock's race. (tests/concurrency/ submits on both too.)
BOTH_BACKENDS = {
    "tests/graph/test_planner.py": None,
    "tests/execution/test_submit.py": {"test_failure_report_and_resume"},
    "tests/safety/test_run_lock.py": {"test_two_submits_and_an_early_resume_on_one_run_never_both_write"},
}


def _on_both(item_path: str, name: str, marked: bool) -> bool:
    if marked:
        return True
    for path, names in BOTH_BACKENDS.items():
        if item_path.endswith(path) and (names is None or name in names):
            return True
    return False


def pytest_generate_tests(metafunc):
    node = metafunc.definition
    if "registry_backend" in metafunc.fixturenames and _on_both(
            str(node.path), node.originalname, node.get_closest_marker("both_backends") is not None):
        metafunc.parametrize("registry_backend", BACKENDS, indirect=True)


def pytest_collection_modifyitems(config, items):
    """PostgreSQL once per execution test: on the local site, not again in SLURM pilot jobs."""
    def both(item) -> bool:
        params = getattr(item, "callspec", None)
        params = params.params if params is not None else {}
        return params.get("registry_backend") == "postgresql" and str(params.get("site_path", "")).startswith("slurm")

    dropped = [item for item in items if both(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not both(item)]


def _admin(url: str):
    from sqlalchemy import create_engine

    return create_engine(f"{url}/postgres", isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The test server's URL (no database); fails loudly when it is down unless OPENASTRO_NO_POSTGRES=1."""
    from sqlalchemy import text

    engine = _admin(PG_URL)
    try:
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to connect means the same thing here
        reason = (f"no PostgreSQL server at {PG_URL} ({type(exc).__name__}); start one with "
                  "`bin/postgres-local start`")
        if os.environ.get("OPENASTRO_NO_POSTGRES") == "1":
            pytest.skip(reason + " (skipped: OPENASTRO_NO_POSTGRES=1)")
        pytest.fail(reason + ", or set OPENASTRO_NO_POSTGRES=1 to skip the PostgreSQL cases", pytrace=False)
    finally:
        engine.dispose()
    return PG_URL


def drop_databases(server: str, prefix: str) -> None:
    """Drop every database named ``prefix...`` (connections still open to them are ended)."""
    from sqlalchemy import text

    engine = _admin(server)
    try:
        with engine.connect() as c:
            names = c.execute(text("SELECT datname FROM pg_database WHERE starts_with(datname, :p)"),
                              {"p": prefix}).scalars().all()
            for name in names:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


@pytest.fixture(autouse=True)
def registry_backend(request, monkeypatch):
    """``sqlite`` (the default) or ``postgresql``: the backend of every repository the test creates."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        monkeypatch.delenv(REGISTRY_SERVER_ENV, raising=False)
        yield backend
        return
    server = request.getfixturevalue("postgres_server")
    prefix = f"oat_{uuid.uuid4().hex[:10]}_"
    monkeypatch.setenv(REGISTRY_SERVER_ENV, f"{server}/{prefix}")
    try:
        yield backend
    finally:
        drop_databases(server, prefix)


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
    apart from new output runs. Always on SQLite, whichever test first asks for it."""
    from openastro_parsl.demo import make_demo_repo

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(REGISTRY_SERVER_ENV, raising=False)
        return make_demo_repo(tmp_path_factory.mktemp("demo") / "repo", seed=42, size="small")
