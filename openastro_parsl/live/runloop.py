"""The live run: one submit loop that stays up and takes new quanta while it runs.

It is the batch ``Submission`` (same payloads, Parsl apps, retries of lost workers and blocks, no-work propagation,
status store, registration by this process only) with two differences: its graph grows (``merge`` adds the quanta
of a newly planned graph, dropping those it already holds), and its quanta may write to several RUN collections
(the per-frame run and each gathering version), so registration groups them by run. Everything here runs in the
engine's loop thread: SQLite connections and the loop's bookkeeping stay in that one thread.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any, Callable, Sequence

from ..execution.status import DONE
from ..execution.submit import Submission, _drain
from ..graph.quantum_graph import QuantumGraph
from ..registry.refs import DatasetType

MAX_WARM = 64
WAKE = object()  # put on the done queue to wake the loop when a request arrives
FINAL = DONE + ("failed", "upstream_failed")


class LiveSubmission(Submission):
    """A ``Submission`` whose graph is extended while it runs; ``step`` is one turn of its loop."""

    def open(self, on_registered: Callable[[list[tuple[str, str, dict]]], None], warm: Sequence[str] = ()) -> Any:
        """Start Parsl and the empty loop; returns the DataFlowKernel (the caller stops it).

        Each worker is first given the modules in ``warm`` to import, so the first frames do not wait for them.
        """
        self.on_registered = on_registered
        self._producers: dict[str, str] = {}  # dataset id -> quantum writing it
        self._known_runs: set[str] = set()
        self.status.set_meta("output_run", self.graph.output_run)
        self.status.set_meta("repo", str(self.butler.root))
        self.status.set_meta("repo_id", self.butler.repo_id)
        self.status.set_meta("state", "running")
        self._init_loop({})
        dfk = self._start_parsl()
        self._limit = self.site.max_in_flight or max(64, 16 * self._workers)
        if warm:
            from parsl import python_app

            for e in self.site.executors:
                app = python_app(warm_worker, executors=[e.label], data_flow_kernel=dfk)
                n = (e.max_workers_per_node or os.cpu_count() or 1) * e.provider.max_blocks * e.provider.nodes_per_block
                for _ in range(min(n, MAX_WARM)):
                    app(list(warm))
        return dfk

    # -- growing the graph ---------------------------------------------------------------------
    def merge(self, new: QuantumGraph, inputs: list[str], pipeline: str) -> list[str]:
        """Add the quanta of ``new`` this run does not hold yet; returns their ids (in the graph's order)."""
        g = self.graph
        added = [q for qid, q in new.quanta.items() if qid not in g.quanta]
        if not added:
            return []
        g.tasks.update(new.tasks)
        g.dataset_types.update(new.dataset_types)
        for did, node in new.datasets.items():
            g.datasets.setdefault(did, node)
        for dim, recs in new.records.items():
            g.records.setdefault(dim, {}).update(recs)
        self._register_run(new, inputs, pipeline)
        for q in added:
            g.quanta[q.id] = q
            for ids in q.outputs.values():
                for d in ids:
                    self._producers[d] = q.id
        self.status.add_quanta((q.id, q.task, q.data_id, self._logs(q)) for q in added)
        for q in added:
            ups = {self._producers[d] for ids in q.inputs.values() for d in ids if d in self._producers}
            self._states[q.id] = "pending"
            for u in ups:
                self._downstream[u].add(q.id)
            self._waiting[q.id] = sum(1 for u in ups if self._states[u] not in DONE)
            failed = [u for u in ups if self._states[u] in ("failed", "upstream_failed")]
            if failed:  # an upstream quantum failed for good before this one was planned
                self._states[q.id] = "upstream_failed"
                self.status.update(q.id, state="upstream_failed", error_kind="upstream_failed",
                                   message=f"blocked by failed quantum {failed[0]}")
            elif self._waiting[q.id] == 0:
                self._ready.insert(0, q.id)  # _next_cluster pops from the end: first planned, first run
        return [q.id for q in added]

    def _logs(self, q) -> dict[str, str]:
        from ..execution.submit import log_paths

        return log_paths(self.run_dir, q.task, q.data_id, q.id)

    def _register_run(self, new: QuantumGraph, inputs: list[str], pipeline: str) -> None:
        reg = self.butler.registry
        for name, dt in new.dataset_types.items():
            reg.register_dataset_type(DatasetType(name, tuple(dt["dimensions"]), dt["storage_class"]))
        run = new.output_run
        if run in self._known_runs:
            return
        created = reg.register_run(run)
        if created or reg.run_inputs(run) is None:
            reg.set_collection_meta(run, "inputs", inputs)
            reg.set_collection_meta(run, "pipeline", pipeline)
        self._known_runs.add(run)

    # -- the loop ------------------------------------------------------------------------------
    def step(self, timeout: float) -> bool:
        """Hand ready quanta to Parsl, then handle what finished within ``timeout``; True when woken by a request."""
        while self._ready and len(self._inflight) < self._limit and not self._stopped:
            self._submit(self._next_cluster())
        self._flush_running()
        items = _drain(self._done_q, timeout=timeout, most=2000)
        woken = any(f is WAKE for f in items)
        futures = [f for f in items if f is not WAKE]
        if futures:
            self._finish_batch([(self._inflight.pop(f), f) for f in futures])
        return woken

    def _register(self, done: list[tuple[str, dict]]) -> None:
        """Register finished quanta, one transaction per RUN collection they write."""
        by_run: dict[str, list[tuple[str, dict]]] = defaultdict(list)
        for qid, manifest in done:
            q = self.graph.quanta[qid]
            first = next(d for ids in q.outputs.values() for d in ids)
            by_run[self.graph.datasets[first].run].append((qid, manifest))
        for run, items in by_run.items():
            self.butler.registry.record_quanta(run, self._registry_items(items))
        self.on_registered([(self.graph.datasets[o["id"]].dataset_type, o["id"], self.graph.quanta[qid].data_id)
                            for qid, m in done for o in m["outputs"]])

    def states_of(self, qids: list[str]) -> dict[str, dict]:
        out = {}
        for qid in qids:
            q = self.graph.quanta.get(qid)
            if q is not None:
                out[qid] = {"task": q.task, "data_id": dict(q.data_id), "state": self._states.get(qid, "pending")}
        return out

    def close_run(self, dfk: Any) -> None:
        """Stop Parsl (bounded), mark what was cut short pending, release the lock.

        A restarted engine plans again whatever was not registered: nothing resumes from this run directory.
        """
        from ..execution.shutdown import stop_parsl

        try:
            stop_parsl(dfk)
        finally:
            cut = [q for qids in self._inflight.values() for q in qids]
            if cut:
                self.status.update_many(cut, state="pending")
            self.status.set_meta("state", "finished")
            self.status.event("end", parsl_tasks=self._parsl_tasks, quanta=len(self.graph.quanta))
            self.close()


def warm_worker(modules: list[str]) -> float:
    """Import modules in a worker (those installed); returns the seconds it took."""
    import importlib
    import importlib.util
    import time

    t0 = time.perf_counter()
    for m in modules:
        if importlib.util.find_spec(m.split(".")[0]) is not None:
            importlib.import_module(m)
    return time.perf_counter() - t0
