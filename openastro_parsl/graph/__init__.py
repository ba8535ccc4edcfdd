"""Quantum graphs: the planner that builds them, their file format, ``--explain`` and DOT drawings."""

from typing import Any

from .._lazy import lazy_exports

__all__ = [
    "DatasetNode", "GraphFormatError", "Planner", "PlanningError", "Quantum", "QuantumGraph", "TaskInfo",
    "explain_data_id", "pipeline_dot", "quantum_graph_dot", "text_tree",
]
_get = lazy_exports(__name__, {
    "quantum_graph": ("DatasetNode", "GraphFormatError", "Quantum", "QuantumGraph", "TaskInfo"),
    "planner": ("Planner", "PlanningError"),
    "explain": ("explain_data_id",),
    "dot": ("pipeline_dot", "quantum_graph_dot", "text_tree"),
})


def __getattr__(name: str) -> Any:
    return _get(name)
