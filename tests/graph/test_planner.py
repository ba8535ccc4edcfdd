import pytest
from testdata import QA, make_small_repo

from openastro_parsl.errors import OpenAstroError
from openastro_parsl.graph.explain import explain_data_id
from openastro_parsl.graph.planner import Planner, PlanningError
from openastro_parsl.graph.quantum_graph import GraphFormatError, QuantumGraph
from openastro_parsl.pipeline.pipeline import load_pipeline
from openastro_parsl.registry.refs import DatasetType

pytestmark = pytest.mark.both_backends


@pytest.fixture
def repo(tmp_path):
    """A repository of the test's own, for tests that change it (the others plan against ``small_repo``)."""
    return make_small_repo(tmp_path)


def plan(butler, spec=QA, **kw):
    kw.setdefault("inputs", ["defaults"])
    kw.setdefault("output_run", "u/t/qa")
    p = Planner(butler, load_pipeline(spec), **kw)
    return p, p.plan()


def test_quanta_per_task_and_links(small_repo):
    planner, g = plan(small_repo)
    assert g.counts_by_task() == {"frameStats": 6, "fieldQa": 2, "targetCoverage": 2}
    ups = g.upstream()
    for q in g.by_task("fieldQa"):
        assert len(q.inputs["stats"]) == 3 and len(ups[q.id]) == 3
        band = q.data_id["band"]
        assert all(g.datasets[d].data_id["band"] == band for d in q.inputs["stats"])
    cov = next(g.by_task("targetCoverage"))
    assert cov.data_id["target"] == "T1" and g.datasets[cov.inputs["refcat"][0]].exists
    assert g.records["target"]["target=T1"]["ra"] == pytest.approx(150.1)
    for q in g.by_task("frameStats"):
        (out,) = q.outputs["stats"]
        node = g.datasets[out]
        assert not node.exists and node.path.startswith("u/t/qa/frameStats/lco1m/") and node.formatter == "json"


def test_ids_are_deterministic(small_repo):
    _, g1 = plan(small_repo)
    _, g2 = plan(small_repo)
    assert list(g1.quanta) == list(g2.quanta)


def test_where_restricts(small_repo):
    _, g = plan(small_repo, where="band = 'r' AND exposure.exptime > 10")
    assert g.counts_by_task() == {"frameStats": 3, "fieldQa": 1, "targetCoverage": 1}
    _, g = plan(small_repo, where="target = 'T1'")  # a dimension no input has: applied at quantum level
    assert g.counts_by_task()["targetCoverage"] == 2


def test_save_load_round_trip(small_repo, tmp_path):
    _, g = plan(small_repo)
    g.save(tmp_path / "g.qgraph")
    back = QuantumGraph.load(tmp_path / "g.qgraph")
    assert list(back.quanta) == list(g.quanta)
    for qid, q in g.quanta.items():
        assert back.quanta[qid].inputs == q.inputs and back.quanta[qid].data_id == q.data_id
    assert {k: (v.path, v.checksum, v.exists) for k, v in back.datasets.items()} == \
        {k: (v.path, v.checksum, v.exists) for k, v in g.datasets.items()}
    assert back.tasks["frameStats"].config["detect_sigma"] == 5.0
    assert back.header["inputs"] == ["defaults"] and back.header["datastore_root"] == str(small_repo.root)


def test_bad_graph_files(tmp_path):
    (tmp_path / "x.qgraph").write_text("hello")
    with pytest.raises(GraphFormatError, match="not a quantum graph file"):
        QuantumGraph.load(tmp_path / "x.qgraph")
    with pytest.raises(GraphFormatError, match="no such quantum graph"):
        QuantumGraph.load(tmp_path / "missing.qgraph")


def test_missing_prerequisite_lists_dataset_and_task(tmp_path):
    butler = make_small_repo(tmp_path, refcat=False)
    with pytest.raises(PlanningError, match="refcat \\{field='demo1'\\} needed by task 'targetCoverage': none found"):
        plan(butler)


def test_empty_graph_says_why(small_repo):
    with pytest.raises(PlanningError, match="task 'frameStats' found no data: no raw datasets .* matching where \"band='z'\""):
        plan(small_repo, where="band='z'")
    with pytest.raises(OpenAstroError, match="collection 'nope' does not exist; known: defaults, raw/all, refcats"):
        plan(small_repo, inputs=["nope"])


def test_dataset_type_conflict_with_registry_names_task(repo):
    repo.registry.register_dataset_type(DatasetType("frameStats", ("instrument", "exposure"), "NumpyArrays"))
    with pytest.raises(PlanningError, match="task 'frameStats' connection 'stats' declares .*StructuredData but the registry has .*NumpyArrays"):
        plan(repo)


def _fake_outputs(butler, run, exposures):
    """Outputs as a finished run would have left them (written through the butler for real)."""
    dt = DatasetType("frameStats", ("instrument", "exposure"), "StructuredData")
    for e in exposures:
        butler.put({"noise": 1.0}, dt, {"instrument": "lco1m", "exposure": e}, run=run)


def test_skip_existing_and_clobber(repo):
    _fake_outputs(repo, "u/t/qa", [100, 101, 102])
    with pytest.raises(PlanningError, match="(?s)outputs already exist in the output run.*frameStats \\{instrument=lco1m,exposure=100\\}"):
        plan(repo)
    planner, g = plan(repo, skip_existing_in=["u/t/qa"])
    assert g.counts_by_task() == {"frameStats": 3, "fieldQa": 2, "targetCoverage": 2}
    assert planner.reports["frameStats"].skipped_existing == 3
    # downstream quanta read the existing outputs
    fq = [q for q in g.by_task("fieldQa")]
    existing = [g.datasets[d] for q in fq for d in q.inputs["stats"] if g.datasets[d].exists]
    assert len(existing) == 3 and all(n.run == "u/t/qa" for n in existing)
    _, g = plan(repo, clobber_outputs=True)
    assert sum(len(q.clobber) for q in g.quanta.values()) == 3


def test_output_run_inputs_must_match(repo):
    repo.registry.register_run("u/t/qa")
    repo.registry.set_collection_meta("u/t/qa", "inputs", ["raw/all", "refcats"])
    with pytest.raises(PlanningError, match="made with inputs \\['raw/all', 'refcats'\\].*lacks"):
        plan(repo)


def test_explain(small_repo):
    planner, g = plan(small_repo, where="band='r'")
    text = explain_data_id(g, planner, "exposure=101")
    assert "frameStats: feeds 1 quantum" in text and "fieldQa: feeds 1" in text
    text = explain_data_id(g, planner, "exposure=100")
    assert "raw exists for it, but -d \"band='r'\" excludes it" in text
