from click.testing import CliRunner
from testdata import lco_header, write_frame

from openastro_parsl.cli.butler import main


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def test_create_ingest_query_verify(tmp_path):
    repo = tmp_path / "repo"
    assert run("create", repo)[0] == 0
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        write_frame(src / f"f{i}.fits", lco_header(10 + i, "rp" if i else "gp"), seed=i)
    (src / "broken.fits").write_bytes(b"not fits at all")
    code, out = run("ingest", repo, src, "--run", "raw/all", "--transfer", "symlink")
    assert code == 0 and "ingested 3" in out and "quarantined 1" in out and "broken.fits" in out
    code, out = run("query-collections", repo)
    assert "raw/all" in out and "RUN" in out
    code, out = run("collection-chain", repo, "defaults", "raw/all")
    code, out = run("query-collections", repo, "def*")
    assert "CHAINED" in out and "raw/all" in out
    code, out = run("query-datasets", repo, "*", "--collections", "defaults", "--where", "band='r'")
    assert code == 0 and "raw (2)" in out and " 11 " in out and " 12 " in out and " 10 " not in out
    code, out = run("query-data-ids", repo, "exposure", "--where", "exposure.exptime > 10 AND band = 'g'")
    assert code == 0 and "1 data IDs" in out
    code, out = run("query-dimension-records", repo, "instrument")
    assert "lco1m" in out and "0.39" in out
    code, out = run("verify", repo)
    assert code == 0 and "verified 3 datasets: 0 problem(s)" in out


def test_errors_are_one_clear_line(tmp_path):
    result = CliRunner().invoke(main, ["query-collections", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "error:" in result.output and "does not exist" in result.output
    assert "Traceback" not in result.output
    repo = tmp_path / "repo"
    run("create", repo)
    result = CliRunner().invoke(main, ["query-data-ids", str(repo), "exposure", "--where", "band = 'r' ; DROP TABLE dataset"])
    assert result.exit_code == 1 and "column" in result.output
    result = CliRunner().invoke(main, ["query-data-ids", str(repo), "exposur"])
    assert result.exit_code == 1 and "unknown dimension 'exposur'" in result.output


def test_colour_terms_without_field_fits_is_one_line(tmp_path):
    repo = tmp_path / "repo"
    run("create", repo)
    result = CliRunner().invoke(main, ["colour-terms", str(repo), "--collections", "u/me/run"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "error: no fieldZeropoints in u/me/run: run the calibration subset (fieldCalibration) first" in result.output
