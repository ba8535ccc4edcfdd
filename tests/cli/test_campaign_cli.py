"""The campaign commands of openastro-butler, end to end: define-fields, define-targets, ingest-refcat,
fetch-refcat, and what openastro-plan says when a field has no catalogue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.table import Table
from click.testing import CliRunner
from testdata import make_small_repo

from openastro_parsl.astro.refcat import GAIA_DR3, RefcatCache, Region
from openastro_parsl.butler import Butler
from openastro_parsl.cli.butler import main
from openastro_parsl.cli.plan import main as plan_main

UNREACHABLE = "http://127.0.0.1:9/"


def run(*args, env=None):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, env=env)
    return result.exit_code, result.output


def registry_state(repo):
    reg = Butler(repo).registry
    return ({d: sorted(map(str, reg.dimension_records(d))) for d in ("field", "target")},
            [(c.name, c.type.value, c.children) for c in reg.query_collections()], reg.count_datasets())


def test_define_fields_and_targets_rerun_and_refuse(tmp_path):
    repo = tmp_path / "repo"
    assert run("create", repo)[0] == 0
    fields, targets = tmp_path / "fields.csv", tmp_path / "targets.csv"
    fields.write_text("name,ra,dec\nW12,07:30:19,+29:40:20\n")
    targets.write_text("name,ra,dec,kind,period,epoch,duration\n"
                       "WASP-12,112.5792,29.6722,transit_host,1.09142,2457010.51,0.125\n"
                       "XRB,19:58:21.7,+35:12:06,variable,5.6,,\n")
    code, out = run("define-fields", repo, fields)
    assert code == 0 and "field: 1 inserted, 0 updated, 0 unchanged" in out
    code, out = run("define-targets", repo, targets)
    assert code == 0 and "new field(s): XRB" in out
    assert "field: 1 inserted, 0 updated, 0 unchanged; target: 2 inserted, 0 updated, 0 unchanged" in out
    code, out = run("define-targets", repo, targets)
    assert code == 0 and out.strip() == "target: 0 inserted, 0 updated, 2 unchanged"
    targets.write_text(targets.read_text().replace("5.6", "5.59"))
    code, out = run("define-targets", repo, targets)
    assert code == 0 and out.strip() == "target: 0 inserted, 1 updated, 1 unchanged"
    code, out = run("query-dimension-records", repo, "target", "--where", "target.period > 5")
    assert "XRB" in out and "5.59" in out and "WASP-12" not in out

    before = registry_state(repo)
    bad = tmp_path / "bad.csv"
    bad.write_text("name,ra,dec,kind\nNEW,10,10,variable\nWASP-12,112.5792,29.6722,moon\n")
    result = CliRunner().invoke(main, ["define-targets", str(repo), str(bad)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{bad}:3: kind 'moon' is not one of transit_host, planet, variable, transient, field_star" in result.output
    assert registry_state(repo) == before  # NEW (a good row) was not written either
    code, out = run("define-fields", repo)
    assert code == 1 and "give either a FILE of fields or --from-exposures" in out


def test_define_fields_from_exposures(tmp_path):
    butler = make_small_repo(tmp_path, refcat=False)  # frames of field demo1 pointing at (150.1, 2.2)
    repo = butler.root
    # forget the centre make_small_repo gave demo1: the pointings must find it
    with butler.registry.transaction() as c:
        c.execute(butler.registry.schema.dimensions["field"].update().values(ra=None, dec=None))
    code, out = run("define-fields", repo, "--from-exposures", "--radius", "0.1")
    assert code == 0 and "field: 0 inserted, 1 updated, 0 unchanged" in out, out
    rec = Butler(repo).registry.dimension_records("field")[0]
    assert (round(rec["ra"], 6), round(rec["dec"], 6)) == (150.1, 2.2)
    code, out = run("define-fields", repo, "--from-exposures")
    assert code == 0 and "field: 0 inserted, 0 updated, 1 unchanged" in out


def test_ingest_refcat_registers_chains_and_replaces(tmp_path):
    butler = make_small_repo(tmp_path, refcat=False)
    repo = butler.root
    cat = tmp_path / "apass.csv"
    cat.write_text("RA,DEC,Johnson_B,Johnson_V\n150.10,2.20,12.65,12.00\n150.12,2.21,13.50,12.90\n"
                   "150.15,2.25,14.0,13.6\n")
    cols = "ra=RA,dec=DEC,B=Johnson_B,V=Johnson_V"
    code, out = run("ingest-refcat", repo, cat, "--field", "demo1", "--system", "johnson", "--columns", cols)
    assert code == 0, out
    assert "note: B_err: no column, set to 0.05 mag (--default-error)" in out
    assert "refcat {field=demo1}: 3 stars registered in run refcats" in out
    assert "chain defaults: raw/all, refcats  (plan with -i defaults)" in out
    g = Butler(repo).get("refcat", {"field": "demo1"}, collections="defaults")
    assert g["g"][0] == np.float64(12.0 + 0.6 * 0.65 - 0.12)
    assert g["g_err"][0] == np.sqrt((0.4 * 0.05) ** 2 + (0.6 * 0.05) ** 2 + 0.02 ** 2)  # defaults through Jester
    before = registry_state(repo)
    code, out = run("ingest-refcat", repo, cat, "--field", "demo1", "--system", "johnson", "--columns", cols)
    assert code == 1 and "already has a refcat in run 'refcats' (3 stars" in out and "--replace" in out
    code, out = run("ingest-refcat", repo, cat, "--field", "demo9", "--columns", cols)
    assert code == 1 and "field 'demo9' is not defined" in out and "define-fields" in out
    assert registry_state(repo) == before
    code, out = run("ingest-refcat", repo, cat, "--field", "demo1", "--system", "johnson", "--columns", cols,
                    "--default-error", "0.02", "--replace")
    assert code == 0 and "3 stars replaced in run refcats" in out
    code, out = run("verify", repo)
    assert code == 0 and "0 problem(s)" in out
    assert len([p for p in (repo / "refcats").rglob("*") if p.is_file()]) == 1


def test_fetch_refcat_offline_from_a_prepopulated_cache(tmp_path):
    butler = make_small_repo(tmp_path, refcat=False)
    repo, cache = butler.root, tmp_path / "refcat.sqlite"
    env = {"OPENASTRO_GAIA_SERVER": UNREACHABLE}
    before = registry_state(repo)
    code, out = run("fetch-refcat", repo, "--field", "demo1", "--cache", cache, env=env)
    assert code == 1 and "is not in the cache" in out and "archive unreachable" in out
    assert registry_state(repo) == before
    rng = np.random.default_rng(11)
    stars = Table({"id": np.arange(1, 31), "ra": 150.1 + rng.uniform(-0.2, 0.2, 30),
                   "dec": 2.2 + rng.uniform(-0.2, 0.2, 30), "g": rng.uniform(12, 16, 30), "r": rng.uniform(11, 15, 30),
                   "g_err": np.full(30, 0.01), "r_err": np.full(30, 0.01), "sel_mag": rng.uniform(11, 16, 30)})
    RefcatCache(cache).put(GAIA_DR3, Region(150.1, 2.2, 0.6), 17.65, stars)
    code, out = run("fetch-refcat", repo, "--field", "demo1", "--cache", cache, "--offline")
    assert code == 0 and f"note: offline: from cache {cache}" in out
    assert "refcat {field=demo1}: 30 stars registered in run refcats" in out
    code, out = run("fetch-refcat", repo, "--field", "demo1", "--cache", cache, "--refresh", "--replace", env=env)
    assert code == 0 and f"note: offline: from cache {cache} (archive unreachable" in out and "replaced" in out
    got = Butler(repo).get("refcat", {"field": "demo1"}, collections="defaults")
    assert sorted(got["id"]) == list(range(1, 31)) and set(got["field"]) == {"demo1"}


def test_plan_without_a_catalogue_names_the_command(tmp_path):
    butler = make_small_repo(tmp_path, refcat=False)
    pipeline = Path(__file__).resolve().parents[2] / "pipelines" / "image.yaml"
    result = CliRunner().invoke(plan_main, ["-b", str(butler.root), "-p", f"{pipeline}#plateSolve", "-i", "defaults",
                                            "-o", "u/t/p"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (f"refcat {{field='demo1'}} needed by task 'plateSolve': none found; add it with `openastro-butler "
            f"ingest-refcat {butler.root} FILE --field demo1`") in " ".join(result.output.split())
