"""DOT output of pipelines and quantum graphs, rendering, and the plain-text tree."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from openastro_parsl.errors import OpenAstroError
from openastro_parsl.graph import dot as dotviz
from openastro_parsl.graph.quantum_graph import DatasetNode, Quantum, QuantumGraph, TaskInfo
from openastro_parsl.pipeline.pipeline import load_pipeline

QA_YAML = Path(__file__).resolve().parents[2] / "pipelines" / "qa.yaml"
HAVE_DOT = shutil.which("dot") is not None

# -- a tiny DOT reader: one statement per line, every identifier a quoted string ----------------
_STR = r'"((?:[^"\\]|\\.)*)"'
_NODE = re.compile(rf"^\s*{_STR}\s*\[(.*)\];$")
_EDGE = re.compile(rf"^\s*{_STR}\s*->\s*{_STR}\s*(?:\[(.*)\])?;$")
_ATTR = re.compile(rf"(\w+)={_STR}")


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), s)


def parse(text: str):
    """(nodes: id -> attrs, edges: [(a, b, attrs)]) of DOT text written by openastro_parsl.graph.dot."""
    lines = text.strip().splitlines()
    assert lines[0].startswith("digraph ") and lines[0].endswith("{") and lines[-1] == "}"
    nodes: dict[str, dict[str, str]] = {}
    edges: list[tuple[str, str, dict[str, str]]] = []
    for line in lines[1:-1]:
        if m := _EDGE.match(line):
            attrs = {k: _unescape(v) for k, v in _ATTR.findall(m.group(3) or "")}
            edges.append((_unescape(m.group(1)), _unescape(m.group(2)), attrs))
        elif m := _NODE.match(line):
            nodes[_unescape(m.group(1))] = {k: _unescape(v) for k, v in _ATTR.findall(m.group(2))}
        else:
            assert re.match(r"^\s*(graph|node|edge) \[.*\];$", line), f"unexpected DOT line: {line!r}"
    for a, b, _ in edges:
        assert a in nodes and b in nodes, f"edge {a} -> {b} names an undeclared node"
    return nodes, edges


# -- graphs built by hand ---------------------------------------------------------------------

def _tasks() -> dict[str, TaskInfo]:
    cal = TaskInfo("calibrate", "x.CalibrateTask", {}, "h1", ("instrument", "exposure"), {
        "raw": {"dataset_type": "raw", "dimensions": ["instrument", "exposure"], "storage_class": "RawImage",
                "multiple": False, "kind": "input"},
        "calexp": {"dataset_type": "calexp", "dimensions": ["instrument", "exposure"], "storage_class": "Image",
                   "multiple": False, "kind": "output"}}, {})
    coadd = TaskInfo("coadd", "x.CoaddTask", {}, "h2", ("field", "band"), {
        "calexps": {"dataset_type": "calexp", "dimensions": ["instrument", "exposure"], "storage_class": "Image",
                    "multiple": True, "kind": "input"},
        "refcat": {"dataset_type": "refcat", "dimensions": ["field"], "storage_class": "Table",
                   "multiple": False, "kind": "prerequisite"},
        "coadd": {"dataset_type": "coadd", "dimensions": ["field", "band"], "storage_class": "Image",
                  "multiple": False, "kind": "output"}}, {})
    return {"calibrate": cal, "coadd": coadd}


def make_graph(n: int = 3, instrument: str = "lco1m") -> QuantumGraph:
    """n raws -> n calibrate quanta -> n calexps -> 1 coadd quantum (+ a prerequisite refcat) -> 1 coadd."""
    datasets: dict[str, DatasetNode] = {}
    quanta: dict[str, Quantum] = {}
    calexps = []
    for i in range(n):
        did = {"instrument": instrument, "exposure": 1040 + i}
        raw = DatasetNode(f"raw-{i}", "raw", did, "raw/all", f"raw/{i}.fits", "FitsImage")
        cx = DatasetNode(f"calexp-{i}", "calexp", did, "u/run", f"calexp/{i}.fits", "FitsImage", exists=False)
        datasets[raw.id] = raw
        datasets[cx.id] = cx
        calexps.append(cx.id)
        quanta[f"q-cal-{i}"] = Quantum(f"q-cal-{i}", "calibrate", did, {"raw": [raw.id]}, {"calexp": [cx.id]})
    refcat = DatasetNode("refcat-0", "refcat", {"field": "demo1"}, "refcats", "refcat.fits", "FitsTable")
    coadd = DatasetNode("coadd-0", "coadd", {"field": "demo1", "band": "r"}, "u/run", "coadd.fits", "FitsImage",
                        exists=False)
    datasets[refcat.id] = refcat
    datasets[coadd.id] = coadd
    quanta["q-coadd"] = Quantum("q-coadd", "coadd", {"field": "demo1", "band": "r"},
                                {"calexps": calexps, "refcat": [refcat.id]}, {"coadd": [coadd.id]})
    types = {"raw": {}, "calexp": {}, "refcat": {}, "coadd": {}}
    return QuantumGraph({"output_run": "u/run"}, _tasks(), types, datasets, quanta)


# -- pipeline ---------------------------------------------------------------------------------

def test_pipeline_dot_structure():
    pipeline = load_pipeline(QA_YAML)
    nodes, edges = parse(dotviz.pipeline_dot(pipeline))
    tasks = {k: v for k, v in nodes.items() if v["shape"] == "box"}
    types = {k: v for k, v in nodes.items() if v["shape"] == "ellipse"}
    assert len(tasks) == len(pipeline) == 3
    # raw, refcat (prerequisite), frameStats, fieldQa, targetCoverage
    assert {v["label"].split("\n")[0] for v in types.values()} == {"raw", "refcat", "frameStats", "fieldQa",
                                                                  "targetCoverage"}
    n_conns = sum(len(t.connections) for t in pipeline)
    assert len(edges) == n_conns == 7
    frame = next(v for v in tasks.values() if v["label"].startswith("frameStats\n"))
    assert frame["label"] == "frameStats\nFrameStatsTask\n(instrument, exposure)"
    raw = next(v for v in types.values() if v["label"].startswith("raw\n"))
    assert raw["label"] == "raw\n(instrument, exposure)\nRawImage"
    # overall inputs (raw, and the prerequisite refcat) are filled; produced types are not
    for v in types.values():
        name = v["label"].split("\n")[0]
        assert ("filled" in v["style"]) == (name in ("raw", "refcat")), name
    # directions and the dashed prerequisite edge
    by_label = {k: v["label"].split("\n")[0] for k, v in nodes.items()}
    pairs = {(by_label[a], by_label[b]): attrs for a, b, attrs in edges}
    assert ("raw", "frameStats") in pairs and ("frameStats", "frameStats") in pairs
    assert ("frameStats", "fieldQa") in pairs and ("fieldQa", "fieldQa") in pairs
    assert pairs[("refcat", "targetCoverage")].get("style") == "dashed"
    assert all(attrs.get("style") != "dashed" for pair, attrs in pairs.items() if pair[0] != "refcat")


# -- quantum graph ----------------------------------------------------------------------------

def test_quantum_graph_dot_full():
    graph = make_graph(3)
    text = dotviz.quantum_graph_dot(graph)
    nodes, edges = parse(text)
    boxes = {k: v for k, v in nodes.items() if v["shape"] == "box"}
    ellipses = {k: v for k, v in nodes.items() if v["shape"] == "ellipse"}
    assert len(boxes) == 4 and len(ellipses) == 3 + 3 + 1 + 1
    # 3 raw->cal, 3 cal->calexp, 3 calexp->coadd, refcat->coadd, coadd->coadd
    assert len(edges) == text.count("->") == 11
    labels = {v["label"] for v in boxes.values()}
    assert "calibrate\ninstrument=lco1m exposure=1042" in labels
    assert "coadd\nfield=demo1 band=r" in labels
    assert r'"calibrate\ninstrument=lco1m exposure=1040"' in text   # newline written as DOT's \n
    existing = [v for v in ellipses.values() if "filled" in v.get("style", "")]
    assert sorted(v["label"].split("\n")[0] for v in existing) == ["raw"] * 3 + ["refcat"]
    predicted = [v for v in ellipses.values() if "filled" not in v.get("style", "")]
    assert sorted(v["label"].split("\n")[0] for v in predicted) == ["calexp"] * 3 + ["coadd"]
    dashed = [(a, b) for a, b, attrs in edges if attrs.get("style") == "dashed"]
    assert len(dashed) == 1 and nodes[dashed[0][0]]["label"].startswith("refcat\n")


def test_states_colour_quanta():
    graph = make_graph(3)
    states = {"q-cal-0": "succeeded", "q-cal-1": "failed", "q-cal-2": "running", "q-coadd": "upstream_failed"}
    nodes, _ = parse(dotviz.quantum_graph_dot(graph, states=states))
    colour = {v["label"]: v["fillcolor"] for v in nodes.values() if v["shape"] == "box"}
    C = dotviz.STATE_COLORS
    assert colour["calibrate\ninstrument=lco1m exposure=1040"] == C["succeeded"]
    assert colour["calibrate\ninstrument=lco1m exposure=1041"] == C["failed"]
    assert colour["calibrate\ninstrument=lco1m exposure=1042"] == C["running"]
    assert colour["coadd\nfield=demo1 band=r"] == C["upstream_failed"]
    assert len(set(C.values())) == len(C)   # every state distinguishable
    # a quantum missing from states counts as pending
    nodes, _ = parse(dotviz.quantum_graph_dot(graph, states={"q-cal-0": "succeeded"}))
    colour = {v["label"]: v["fillcolor"] for v in nodes.values() if v["shape"] == "box"}
    assert colour["coadd\nfield=demo1 band=r"] == C["pending"]


def test_collapse_to_tasks_above_max_nodes():
    graph = make_graph(500)
    full_nodes = 500 + 1 + 500 + 500 + 1 + 1
    text = dotviz.quantum_graph_dot(graph)   # default max_nodes=300
    nodes, edges = parse(text)
    assert len(nodes) == 2 + 4 and len(edges) == 5 < full_nodes
    labels = {v["label"] for v in nodes.values()}
    assert {"calibrate\n500 quanta", "coadd\n1 quantum", "raw\n500 datasets", "calexp\n500 datasets",
            "refcat\n1 dataset", "coadd\n1 dataset"} == labels
    name = {k: v["label"].split("\n")[0] for k, v in nodes.items()}
    counts = {(name[a], name[b]): attrs["label"] for a, b, attrs in edges}
    assert counts == {("raw", "calibrate"): "500", ("calibrate", "calexp"): "500", ("calexp", "coadd"): "500",
                      ("refcat", "coadd"): "1", ("coadd", "coadd"): "1"}
    assert "collapsed to tasks" in text
    # the limit is the switch: the same graph stays per-quantum when allowed enough nodes
    full, _ = parse(dotviz.quantum_graph_dot(graph, max_nodes=full_nodes))
    assert len(full) == full_nodes
    small, _ = parse(dotviz.quantum_graph_dot(make_graph(3), max_nodes=11))
    assert len(small) == 6   # 12 nodes > 11


def test_collapsed_states_counted_and_worst_coloured():
    graph = make_graph(500)
    states = {f"q-cal-{i}": "succeeded" for i in range(480)}
    states |= {f"q-cal-{i}": "failed" for i in range(480, 490)}   # 10 failed, 10 left out -> pending
    states["q-coadd"] = "upstream_failed"
    nodes, _ = parse(dotviz.quantum_graph_dot(graph, states=states))
    tasks = {v["label"].split("\n")[0]: v for v in nodes.values() if v["shape"] == "box"}
    assert tasks["calibrate"]["label"] == "calibrate\n500 quanta\nfailed 10, pending 10, succeeded 480"
    assert tasks["calibrate"]["fillcolor"] == dotviz.STATE_COLORS["failed"]
    assert tasks["coadd"]["label"] == "coadd\n1 quantum\nupstream_failed 1"
    assert tasks["coadd"]["fillcolor"] == dotviz.STATE_COLORS["upstream_failed"]
    states = {f"q-cal-{i}": "succeeded" for i in range(500)} | {"q-coadd": "running"}
    nodes, _ = parse(dotviz.quantum_graph_dot(graph, states=states))
    tasks = {v["label"].split("\n")[0]: v for v in nodes.values() if v["shape"] == "box"}
    assert tasks["calibrate"]["fillcolor"] == dotviz.STATE_COLORS["succeeded"]
    assert tasks["coadd"]["fillcolor"] == dotviz.STATE_COLORS["running"]


def test_escaping_quotes_backslashes_newlines():
    nasty = 'O"Brien\\cam\nx'
    graph = make_graph(2, instrument=nasty)
    text = dotviz.quantum_graph_dot(graph)
    assert r'instrument=O\"Brien\\cam\nx exposure=1040' in text
    nodes, edges = parse(text)   # every line still parses: nothing leaked out of a quoted string
    assert f"calibrate\ninstrument={nasty} exposure=1040" in {v["label"] for v in nodes.values()}
    assert len(edges) == 2 + 2 + 2 + 1 + 1
    assert dotviz.quote('a"b\\c') == r'"a\"b\\c"'


@pytest.mark.skipif(not HAVE_DOT, reason="Graphviz `dot` is not installed (apt-get install graphviz)")
def test_dot_is_valid_for_graphviz(tmp_path):
    nasty = make_graph(2, instrument='O"Brien\\cam')
    outputs = [
        dotviz.write(dotviz.pipeline_dot(load_pipeline(QA_YAML)), tmp_path / "pipeline.svg"),
        dotviz.write(dotviz.quantum_graph_dot(nasty), tmp_path / "qgraph.svg"),
        dotviz.write(dotviz.quantum_graph_dot(make_graph(400), states={"q-coadd": "failed"}), tmp_path / "c.svg"),
    ]
    for out in outputs:
        text = out.read_text()
        assert text.startswith("<?xml") or "<svg" in text
    assert "O&quot;Brien" in outputs[1].read_text()
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.skipif(not HAVE_DOT, reason="Graphviz `dot` is not installed (apt-get install graphviz)")
def test_write_reports_dot_failure(tmp_path):
    with pytest.raises(OpenAstroError, match="Graphviz `dot` failed.*syntax error"):
        dotviz.write("digraph { this is -> not -> { valid", tmp_path / "bad.svg")
    assert not (tmp_path / "bad.svg").exists()


def test_write_dot_text(tmp_path):
    text = dotviz.pipeline_dot(load_pipeline(QA_YAML))
    assert dotviz.write(text, tmp_path / "p.dot") == tmp_path / "p.dot"
    assert (tmp_path / "p.dot").read_text() == text
    with pytest.raises(OpenAstroError, match=r"\.txt"):
        dotviz.write(text, tmp_path / "p.txt")


def test_write_without_graphviz(tmp_path, monkeypatch):
    monkeypatch.setattr(dotviz.shutil, "which", lambda name: None)
    text = dotviz.quantum_graph_dot(make_graph(3))
    with pytest.raises(OpenAstroError) as info:
        dotviz.write(text, tmp_path / "g.svg")
    msg = str(info.value)
    assert "Graphviz `dot` is not installed" in msg and "apt-get install graphviz" in msg
    assert str(tmp_path / "g.dot") in msg
    assert (tmp_path / "g.dot").read_text() == text
    assert not (tmp_path / "g.svg").exists()


# -- plain text -------------------------------------------------------------------------------

def test_text_tree():
    text = dotviz.text_tree(make_graph(8), max_per_task=5)
    lines = text.splitlines()
    assert lines[0] == "quantum graph for u/run: 9 quanta, 18 datasets (9 existing, 9 to be written)"
    assert "calibrate (instrument, exposure): 8 quanta" in lines
    assert "coadd (field, band): 1 quantum" in lines
    assert lines.index("calibrate (instrument, exposure): 8 quanta") < lines.index("coadd (field, band): 1 quantum")
    assert "  inputs:  raw 8 datasets" in lines
    assert "  outputs: calexp 8 datasets" in lines
    assert "  inputs:  calexp 8 datasets (multiple); refcat 1 dataset (prerequisite)" in lines
    shown = [x for x in lines if x.startswith("    instrument=")]
    assert len(shown) == 5
    assert shown[0] == "    instrument=lco1m exposure=1040: 1 input (raw 1), 1 output (calexp 1)"
    assert "    ... and 3 more" in lines
    assert "    field=demo1 band=r: 9 inputs (calexp 8, refcat 1), 1 output (coadd 1)" in lines
    assert "[" not in text   # printed through rich: no accidental markup
