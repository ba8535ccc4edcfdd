"""Registry throughput on SQLite and PostgreSQL: registration rate of the submit loop's path and a selective query.

Registration goes through ``Registry.record_quanta``, the call the submit loop makes for each batch of finished
quanta (``execution/submit.py``: a batch is whatever finished, at most 2000): one output dataset per quantum, its
location, the quantum's provenance row and its input and output links, all in one transaction per batch. The
rate is datasets registered per second of that call. Then the registry is filled to ``--datasets`` datasets the
same way and ``Butler.query_datasets`` (what ``openastro-butler query-datasets`` runs) is timed with selective
``where`` expressions.

    python benchmarks/registry_throughput.py            # 1M datasets per backend
    python benchmarks/registry_throughput.py --quick    # 100k

PostgreSQL is the server of ``bin/postgres-local`` (or ``--pg URL``); without one that backend is reported as
skipped. Targets: >= 5,000 datasets/s on SQLite; the 1M-dataset selective query < 1 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

N_FIELDS = 1000
BANDS = ("g", "r", "i")
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:55432"


def _items(start: int, n: int, packages: dict) -> list[dict]:
    """``n`` finished quanta as the submit loop hands them to the registry: one calexp each from one raw."""
    out = []
    for e in range(start, start + n):
        field, band = f"f{e % N_FIELDS:04d}", BANDS[e % len(BANDS)]
        did = {"instrument": "cam", "exposure": e, "band": band, "field": field}
        qid, dsid = str(uuid.uuid4()), str(uuid.uuid4())
        loc = {"path": f"bench/calexp/cam/{field}/{e}.fits", "checksum": f"{e:064x}", "size": 1000 + e,
               "formatter": "fits", "mtime_ns": 1_700_000_000_000_000_000 + e}
        out.append({"quantum_id": qid, "task": "calibrate", "task_class": "bench.Calibrate",
                    "data_id_key": f"instrument=cam,exposure={e}", "config_hash": "0" * 32,
                    "outputs": [("calexp", did, loc, dsid)], "input_ids": [str(uuid.uuid5(uuid.NAMESPACE_OID, str(e)))],
                    "clobber": [], "provenance": {"host": "node001", "slurm_job_id": "42", "started": 1.0,
                                                  "ended": 2.0, "packages": packages}})
    return out


def _repo(root: Path, db: str | None):
    from openastro_parsl.butler import Butler
    from openastro_parsl.registry.refs import DatasetType

    butler = Butler.create(root, db=db)
    reg = butler.registry
    reg.sync_dimension_records("instrument", [{"name": "cam", "pixel_scale": 0.4}])
    reg.sync_dimension_records("band", [{"name": b} for b in BANDS])
    reg.sync_dimension_records("field", [{"name": f"f{i:04d}", "ra": i * 0.36, "dec": 0.0} for i in range(N_FIELDS)])
    reg.register_dataset_type(DatasetType("calexp", ("instrument", "exposure"), "Image"))
    reg.register_run("bench/run")
    return butler


def _fill(reg, start: int, n: int, batch: int, packages: dict) -> tuple[float, float]:
    """Register ``n`` datasets in batches of ``batch``; the wall and CPU seconds spent inside record_quanta.

    CPU (this process's, kernel time included) moves less than wall on a shared machine: at a load of 10 on
    2 cores the benchmark gets a third of a core.
    """
    wall = cpu = 0.0
    for s in range(start, start + n, batch):
        items = _items(s, min(batch, start + n - s), packages)
        t0, c0 = time.perf_counter(), time.process_time()
        reg.record_quanta("bench/run", items)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
    return wall, cpu


def _best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench(backend: str, db: str | None, total: int, batches: list[int]) -> dict:
    from openastro_parsl.butler import Butler

    packages = {"numpy": "2.0", "astropy": "6.1", "openastro_parsl": "0.1.0"}  # as a real run records them
    with tempfile.TemporaryDirectory(prefix=f"regbench-{backend}-") as tmp:
        butler = _repo(Path(tmp) / "repo", db)
        reg = butler.registry
        out: dict = {"backend": backend, "rates": {}}
        done = 0
        for b in batches:  # the registration rate, on a registry still small
            n = max(b * 5, 10_000)
            out["rates"][b] = n / _fill(reg, done, n, b, packages)[0]
            done += n
        t0 = time.perf_counter()
        rest = total - done
        last = min(rest, max(total // 10, max(batches)))  # the rate near ``total``, apart from the average
        fill_s, fill_cpu = _fill(reg, done, rest - last, max(batches), packages)
        last_s, last_cpu = _fill(reg, total - last, last, max(batches), packages)
        out["fill_rate"] = rest / (fill_s + last_s)
        out["fill_cpu_rate"] = rest / (fill_cpu + last_cpu)
        out["last_n"], out["last_rate"], out["last_cpu_rate"] = last, last / last_s, last / last_cpu
        out["fill_wall_s"] = time.perf_counter() - t0
        butler = Butler(butler.root, collections="bench/run")  # a fresh process would open it so
        assert butler.registry.count_datasets() == total
        e = total // 2 + 7
        queries = {
            f"exposure = {e}": 1,
            "field = 'f0042' AND band = 'g'": None,
            f"exposure > {total - 50}": 49,
        }
        out["queries"] = {}
        for where, want in queries.items():
            got = len(butler.query_datasets("calexp", where=where))
            assert want is None or got == want, (where, got)
            out["queries"][where] = (_best(lambda w=where: butler.query_datasets("calexp", where=w)), got)
        butler.registry.close()
    return out


def _pg_db(server: str) -> str | None:
    from sqlalchemy import create_engine, text

    engine = create_engine(f"{server}/postgres")
    try:
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to connect: no server to measure
        print(f"postgresql: skipped, no server at {server} ({type(exc).__name__}); bin/postgres-local start",
              file=sys.stderr)
        return None
    finally:
        engine.dispose()
    return f"{server}/regbench_{uuid.uuid4().hex[:10]}"


def _drop(server: str, db: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{db.rsplit("/", 1)[1]}" WITH (FORCE)'))
    engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100k datasets")
    ap.add_argument("--batch", type=int, action="append", help="batch size(s) (default 100 and 2000)")
    ap.add_argument("--pg", default=PG_DEFAULT, help="PostgreSQL server URL (no database)")
    ap.add_argument("--backend", choices=("sqlite", "postgresql"), action="append")
    args = ap.parse_args()
    total = 100_000 if args.quick else args.datasets
    batches = sorted(args.batch or [100, 2000])
    results = []
    for backend in args.backend or ["sqlite", "postgresql"]:
        db = None if backend == "sqlite" else _pg_db(args.pg)
        if backend == "postgresql" and db is None:
            continue
        try:
            r = bench(backend, db, total, batches)
        finally:
            if db is not None:
                _drop(args.pg, db)
        results.append(r)
        rates = " ".join(f"batch{b}={v:,.0f}/s" for b, v in r["rates"].items())
        print(f"{backend}: registration {rates}; filling to {total:,} at {r['fill_rate']:,.0f}/s "
              f"({r['fill_cpu_rate']:,.0f}/s of CPU; {r['fill_wall_s']:.0f} s wall), the last {r['last_n']:,} at "
              f"{r['last_rate']:,.0f}/s ({r['last_cpu_rate']:,.0f}/s of CPU); load {os.getloadavg()[0]:.1f}")
        for where, (t, n) in r["queries"].items():
            print(f"{backend}: query-datasets calexp where {where!r} over {total:,}: {t * 1000:.1f} ms ({n} found)")
    if len(results) == 2:
        s, p = results
        for b in batches:
            print(f"ratio postgresql/sqlite registration batch{b}: {p['rates'][b] / s['rates'][b]:.2f}")
        for where in s["queries"]:
            print(f"ratio postgresql/sqlite query {where!r}: {p['queries'][where][0] / s['queries'][where][0]:.2f}")
    for r in results:
        worst = max(t for t, _ in r["queries"].values())
        print(f"{r['backend']}: datasets={total} reg_per_s={r['rates'][max(batches)]:.0f} "
              f"worst_query_s={worst:.3f}")


if __name__ == "__main__":
    main()
