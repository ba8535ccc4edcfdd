"""`openastro-plan --explain "exposure=1042"`: which quanta one data ID feeds, or why it feeds none.

The question a user asks when a frame is missing from a co-add; answered from the planner's own
bookkeeping, so the answer is what the planner actually did, not a re-derivation.
"""

from __future__ import annotations

from ..registry.where import evaluate_where, parse_where, referenced_identifiers
from .quantum_graph import QuantumGraph


def explain_data_id(graph: QuantumGraph, planner, text: str) -> str:
    """Which quanta of ``graph`` the data ID ``text`` feeds, or why it feeds none (``--explain``)."""
    node = parse_where(text)
    if node is None:
        return "nothing to explain: empty data ID"
    dims = {d for d, _ in referenced_identifiers(node, {})}

    def match(data_id) -> bool:
        if not dims <= set(data_id):
            return False
        return evaluate_where(node, lambda d, a: data_id.get(d), {})

    lines = [f"data ID {text}:"]
    for label, info in graph.tasks.items():
        hits = []
        for q in graph.by_task(label):
            if match(q.data_id) or any(match(graph.datasets[d].data_id) for ids in q.inputs.values() for d in ids
                                       if d in graph.datasets):
                hits.append(q)
        if hits:
            shown = "; ".join(", ".join(f"{k}={v}" for k, v in q.data_id.items()) for q in hits[:5])
            more = f" and {len(hits) - 5} more" if len(hits) > 5 else ""
            lines.append(f"  {label}: feeds {len(hits)} quantum(a): {shown}{more}")
            continue
        report = planner.reports.get(label)
        reasons = []
        for conn in info.connections.values():
            if conn["kind"] not in ("input", "prerequisite"):
                continue
            avail = planner.available.get(conn["dataset_type"]) if conn["kind"] == "input" else None
            if avail is None:
                continue
            n = sum(1 for d in avail.nodes if match(d.data_id))
            if n == 0:
                applicable = dims <= set(planner.universe.expanded(conn["dimensions"]))
                if not applicable:
                    reasons.append(f"{conn['dataset_type']} has no {', '.join(sorted(dims))} dimension")
                elif planner.where and avail.where_applied and planner.registry.query_datasets(
                        conn["dataset_type"], planner.inputs, text):
                    reasons.append(f"{conn['dataset_type']} exists for it, but -d {planner.where!r} excludes it")
                else:
                    reasons.append(f"no {conn['dataset_type']} dataset for it in the inputs or from upstream tasks")
        if report is not None and report.dropped_by_where:
            reasons.append(f"the -d expression excluded {report.dropped_by_where} candidate quanta of this task")
        if report is not None and report.skipped_existing:
            reasons.append(f"{report.skipped_existing} quanta skipped: outputs already exist")
        lines.append(f"  {label}: no quantum — {'; '.join(reasons) or 'its data IDs do not involve it'}")
    return "\n".join(lines)
