"""Shared fixtures: fresh repositories and small FITS frames made on the fly, on either registry backend.

Every test runs on SQLite. Tests marked ``both_backends`` run a second time with ``registry_backend ==
"postgresql"``: every repository they create (``butler``, ``populated``, ``make_small_repo``, a hand-made one
through ``registry_url``) gets its own new database on the PostgreSQL server of ``bin/postgres-local`` (or
``$OPENASTRO_TEST_POSTGRES``), dropped when the test ends. A server that is not running fails those cases, naming
the command that starts it; ``OPENASTRO_NO_POSTGRES=1`` makes them skip instead (for a machine without one).

Marked: every registry and planner test that opens a registry, the core execution tests that register or resume
(tests/execution/test_submit.py, test_kill_submit.py) and the safety tests whose run or check goes through the
registry, on the local site (PostgreSQL is not run again inside SLURM pilot jobs: the hook below drops that
pairing), and tests/concurrency/. Not marked, and why:
- tests that never open a registry (graph files, run locks, report drawings from a status store, name grammar,
  site checks): a second backend would repeat them unchanged;
- checks of SQLite itself (pragmas, damaged or locked registry files, a registry file edited with sqlite3) and a
  repository copied with ``cp -r`` (on PostgreSQL the copy shares the original's database);
- runs whose registry side a marked test already covers, kept to SQLite for time: Ctrl-C, SIGTERM, SIGKILL of the
  submit alone and a full disk (stop, then resume registers each dataset once: test_kill_submit.py), a lost
  worker's retry and a MemoryError's classification (test_submit.py's others register and resume), the workers'
  checks of changed inputs (sizes, mtimes and checksums reach the graph from the registry: test_input_fast_path's
  marked tests);
- the long science runs (test_science_run, test_demo_run, test_own_telescope, test_archival_run, test_isr_run,
  test_asteroid_vetting, the zero-point seeds) and the demo survey (``demo``): they exercise the tasks, not the
  registry, through the same registry calls the marked tests make, and a second backend would add minutes to the
  suite (making the small demo survey alone took 24 s on PostgreSQL against 6 s on SQLite here: one round trip
  per frame's records).
"""

from __future__ import annotations

import os
import uuid

import pytest

from openastro_parsl.butler import REGISTRY_SERVER_ENV, Butler

BACKENDS = ("sqlite", "postgresql")
PG_URL = os.environ.get("OPENASTRO_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:55432")


def pytest_generate_tests(metafunc):
    if "registry_backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_backends"):
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
def registry_url(registry_backend, tmp_path):
    """``registry_url(name)``: the URL of a new registry database called ``name`` on the test's backend, for tests
    that make a ``Registry`` by hand (an SQLite file in tmp_path, or a database under the test's prefix)."""
    def make(name: str) -> str:
        if registry_backend == "sqlite":
            return f"sqlite:///{tmp_path / name}.sqlite3"
        return os.environ[REGISTRY_SERVER_ENV] + name

    return make


@pytest.fixture(scope="session")
def _read_only_repos(tmp_path_factory):
    """Repositories made once per session and backend (see ``small_repo``); their PostgreSQL databases are dropped
    when the session ends."""
    made: dict[tuple[str, str], Butler] = {}
    prefix = f"oat_{uuid.uuid4().hex[:10]}_ro_"
    servers: set[str] = set()

    def get(name: str, backend: str, pg_server: str | None, make):
        if (name, backend) not in made:
            with pytest.MonkeyPatch.context() as mp:
                if pg_server is None:
                    mp.delenv(REGISTRY_SERVER_ENV, raising=False)
                else:
                    servers.add(pg_server)
                    mp.setenv(REGISTRY_SERVER_ENV, f"{pg_server}/{prefix}")
                made[name, backend] = make(tmp_path_factory.mktemp(f"ro-{name}-{backend}"))
        return made[name, backend]

    yield get
    for url in servers:
        drop_databases(url, prefix)


@pytest.fixture
def read_only_repo(request, registry_backend, _read_only_repos):
    """``read_only_repo(name, make)``: ``make(directory)``'s repository on the test's backend, made once per session
    and shared by every test that asks for ``name``: for tests that only read it (plan, query, explain)."""
    pg = request.getfixturevalue("postgres_server") if registry_backend == "postgresql" else None
    return lambda name, make: _read_only_repos(name, registry_backend, pg, make)


@pytest.fixture
def small_repo(read_only_repo) -> Butler:
    """``make_small_repo``'s repository, shared by the tests that only read it. A test that writes to its registry
    or datastore makes its own."""
    from testdata import make_small_repo

    return read_only_repo("small", make_small_repo)


@pytest.fixture
def butler(tmp_path) -> Butler:
    return Butler.create(tmp_path / "repo")


@pytest.fixture
def populated(butler) -> Butler:
    """A repo with two instruments, two bands, one field and six exposures (ids 1..6)."""
    return populate(butler)


def populate(butler: Butler) -> Butler:
    """``populated``'s records written into ``butler``."""
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
