from click.testing import CliRunner
from testdata import QA, make_small_repo

from openastro_parsl.cli.plan import main
from openastro_parsl.graph.quantum_graph import QuantumGraph


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def test_plan_prints_counts_saves_and_draws(tmp_path):
    butler = make_small_repo(tmp_path)
    code, out = run("-b", butler.root, "-p", QA, "-i", "defaults", "-o", "u/t/qa", "-d", "band='r'",
                    "-c", "frameStats:detect_sigma=4", "--save-qgraph", tmp_path / "g.qgraph",
                    "--qgraph-dot", tmp_path / "g.dot", "--pipeline-dot", tmp_path / "p.dot",
                    "--show", "graph", "--show", "tasks")
    assert code == 0, out
    rows = {line.split()[1]: line.split()[3] for line in out.splitlines() if line.startswith("│") and len(line.split()) >= 4}
    assert rows["frameStats"] == "3" and rows["fieldQa"] == "1" and rows["total"] == "5"
    g = QuantumGraph.load(tmp_path / "g.qgraph")
    assert g.counts_by_task() == {"frameStats": 3, "fieldQa": 1, "targetCoverage": 1}
    assert g.tasks["frameStats"].config["detect_sigma"] == 4.0
    assert "->" in (tmp_path / "g.dot").read_text() and "frameStats" in (tmp_path / "p.dot").read_text()


def test_show_config_without_repo():
    code, out = run("-p", f"{QA}#frames", "-c", "frameStats:min_area=9", "--show", "config")
    assert code == 0 and "min_area: 9" in out and "detect_sigma: 5.0" in out


def test_plan_errors_exit_nonzero_with_message(tmp_path):
    butler = make_small_repo(tmp_path, refcat=False)
    code, out = run("-b", butler.root, "-p", QA, "-i", "defaults", "-o", "u/t/qa")
    assert code == 1 and "refcat {field='demo1'} needed by task 'targetCoverage'" in out
    code, out = run("-b", butler.root, "-p", f"{QA}#frames", "-i", "defaults", "-o", "u/t/qa", "-d", "band = 'r' AND")
    assert code == 1 and "column" in out
    code, out = run("-b", butler.root, "-p", f"{QA}#frames", "-i", "defaults", "-o", "u/t/qa", "--explain", "exposure=101")
    assert code == 0 and "frameStats: feeds 1 quantum" in out
