"""The submit loop: run a quantum graph on Parsl, register what finishes, keep the run's state on disk.

One process owns the registry and the status store; workers only run quanta and return manifests. Quanta
are handed to Parsl only when their inputs exist and only a bounded number at a time, so the memory of
this process follows the graph, not the number of futures. Every state change is written to the status
store at once: a second shell can watch, and a killed submit can be resumed without redoing anything that
was registered.
"""

from __future__ import annotations

import json
import os
import pickle
import queue
import re
import socket
import statistics
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from ..butler import Butler
from ..errors import OpenAstroError
from ..graph.quantum_graph import QuantumGraph
from ..registry.refs import DatasetType
from ..registry.registry import RegistryBusyError
from .classify import classify_exception, classify_manifest, is_disk_full, learn_manager_job, lost_job
from .lean_import import parsl_without_extras
from .preflight import preflight
from .runlock import RunLock, process_start_time
from .shutdown import Background, Interrupts, discard_parsl, load_parsl, stop_parsl
from .site import SiteConfig, check_shell_safe, parsl_config, workers_per_node
from .status import DONE, STATES, StatusStore, worker_fields

GRAPH_FILE = "graph.qgraph"
STATUS_FILE = "status.sqlite3"
SUMMARY_FILE = "summary.json"
# Space set aside in the run directory while a run goes: given back when the disk fills up, so the run's
# end state and summary can still be written.
RESERVE_FILE = ".space-reserve"
RESERVE_BYTES = 1 << 20
# Quanta shorter than this (mean, per task) are sent to Parsl in clusters lasting about CLUSTER_TARGET_S.
TINY_QUANTUM_S = 0.05
CLUSTER_TARGET_S = 0.25
MAX_CLUSTER = 32
_SAFE = re.compile(r"[^A-Za-z0-9._=+-]")
_PACKAGES = ("openastro-parsl", "parsl", "numpy", "scipy", "astropy", "sep", "photutils", "reproject",
             "batman-package", "ttvfast", "dynesty", "torch")


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape results, recorded with every output as provenance."""
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def data_id_dirname(data_id: dict) -> str:
    """A data ID as the folder name of its quanta's logs (``instrument=lco1m_exposure=1042``)."""
    return _SAFE.sub("_", "_".join(f"{k}={v}" for k, v in data_id.items())) or "none"


def log_paths(run_dir: Path, task: str, data_id: dict, qid: str) -> dict[str, str]:
    """The paths of one quantum's stdout, stderr and structured log (``.jsonl``)."""
    base = f"{run_dir}/logs/{task}/{data_id_dirname(data_id)}/{qid}"  # str(Path / ...) alike, at a tenth the cost
    return {"stdout": f"{base}.stdout", "stderr": f"{base}.stderr", "jsonl": f"{base}.jsonl"}


def holding_repo(run_dir: Path, output_run: str) -> Path | None:
    """The repository a run directory sits in (``REPO/submit/<output run>/<stamp>``), if it still sits in one.

    A run directory resumes into the repository that holds it, so resuming a copy of a repository never
    writes into the original.
    """
    try:
        root = run_dir.parents[len([p for p in output_run.split("/") if p])]
    except IndexError:
        return None
    if root.name == "submit" and (root.parent / "butler.yaml").exists():
        return root.parent
    return None


def new_run_dir(butler: Butler, output_run: str) -> Path:
    """Make a new run directory, ``REPO/submit/<output run>/<timestamp>`` (suffixed when that is taken)."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    base = butler.root / "submit" / output_run / stamp
    n = 1
    path = base
    while path.exists():
        path = base.with_name(f"{stamp}-{n}")
        n += 1
    path.mkdir(parents=True)
    return path


@dataclass
class Summary:
    """What a run did, per task and per failure kind; ``ok`` when nothing failed. Saved as summary.json."""

    run_dir: Path
    output_run: str
    per_task: dict[str, dict[str, Any]]
    failures_by_kind: dict[str, int]
    wall_s: float
    ok: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "output_run": self.output_run, "ok": self.ok, "wall_s": round(self.wall_s, 3),
                "per_task": self.per_task, "failures_by_kind": self.failures_by_kind, **self.extra}


class Submission:
    """One execution attempt of a run directory's graph (the first one, or a resume)."""

    def __init__(self, butler: Butler, graph: QuantumGraph, run_dir: Path, site: SiteConfig, site_source: str,
                 *, progress: Callable[[dict[str, int], int], None] | None = None,
                 on_failure: Callable[[dict], None] | None = None, lock: RunLock | None = None):
        self.butler = butler
        self.lock = lock
        self.graph = graph
        self.run_dir = run_dir
        self.site = site
        self.site_source = site_source
        self.status = StatusStore(run_dir / STATUS_FILE)
        self.progress = progress
        self.on_failure = on_failure
        self.packages = package_versions()
        self.host = socket.gethostname()

    # -- preparation --------------------------------------------------------------------------
    @classmethod
    def start(cls, butler: Butler, graph: QuantumGraph, site: SiteConfig, site_source: str, *,
              graph_source: str = "the quantum graph", notify: Callable[[str], None] | None = None,
              **kw) -> "Submission":
        butler.check_graph(graph.header, graph_source)
        check_shell_safe(butler.root / "submit" / graph.output_run)  # before a run directory or a job exists
        preflight(site, site_source)
        lock = RunLock(butler.root, graph.output_run, notify=notify).acquire()
        try:
            run_dir = new_run_dir(butler, graph.output_run)
            lock.set_run_dir(run_dir)
            graph.save(run_dir / GRAPH_FILE)
            sub = cls(butler, graph, run_dir, site, site_source, lock=lock, **kw)
            sub.status.add_quanta((q.id, q.task, q.data_id, log_paths(run_dir, q.task, q.data_id, q.id))
                                  for q in graph.quanta.values())
            sub.status.set_meta("output_run", graph.output_run)
            sub.status.set_meta("repo", str(butler.root))
            sub.status.set_meta("repo_id", butler.repo_id)
            sub.status.set_meta("skipped", graph.header.get("skipped", {}))
        except BaseException:
            lock.release()
            raise
        return sub

    @classmethod
    def resume(cls, run_dir: str | Path, site: SiteConfig | None = None, site_source: str | None = None, *,
               notify: Callable[[str], None] | None = None, **kw) -> "Submission":
        run_dir = Path(run_dir).resolve()
        if not (run_dir / GRAPH_FILE).exists() or not (run_dir / STATUS_FILE).exists():
            raise OpenAstroError(f"{run_dir} is not a run directory (needs {GRAPH_FILE} and {STATUS_FILE})")
        graph = QuantumGraph.load(run_dir / GRAPH_FILE)
        status = StatusStore(run_dir / STATUS_FILE)
        butler = Butler(holding_repo(run_dir, graph.output_run) or status.meta("repo") or graph.header["repo"])
        butler.check_graph(graph.header, f"the run directory {run_dir}")
        if site is None:
            from .site import load_site

            site, site_source = load_site(status.meta("site_path"))
        status.close()
        check_shell_safe(run_dir)
        preflight(site, site_source or "")
        lock = RunLock(butler.root, graph.output_run, run_dir, notify=notify).acquire()
        try:
            return cls(butler, graph, run_dir, site, site_source or "", lock=lock, **kw)
        except BaseException:
            lock.release()
            raise

    def _register_types_and_run(self) -> None:
        reg = self.butler.registry
        for name, dt in self.graph.dataset_types.items():
            reg.register_dataset_type(DatasetType(name, tuple(dt["dimensions"]), dt["storage_class"]))
        created = reg.register_run(self.graph.output_run)
        if created or reg.run_inputs(self.graph.output_run) is None:
            reg.set_collection_meta(self.graph.output_run, "inputs", self.graph.header["inputs"])
            reg.set_collection_meta(self.graph.output_run, "pipeline", self.graph.header.get("pipeline", ""))

    def _reconcile(self) -> dict[str, str]:
        """States to start from.

        Quanta whose outputs are registered count as succeeded whatever the store says (the submit may have died between
        the two writes); everything else not done runs again.
        """
        states = self.status.states()
        unsure = [q for q, s in states.items() if s not in DONE]
        outputs = {q: [d for ids in self.graph.quanta[q].outputs.values() for d in ids] for q in unsure}
        present = self.butler.registry.existing_dataset_ids(d for ids in outputs.values() for d in ids)
        recovered, reset = [], []
        for q in unsure:
            if outputs[q] and all(d in present for d in outputs[q]):
                recovered.append(q)
            elif states[q] != "pending":
                reset.append(q)
        if recovered:
            self.status.update_many(recovered, state="succeeded")
            self.status.event("recovered", count=len(recovered), note="outputs already registered")
        if reset:
            self.status.update_many(reset, state="pending", error_kind=None, error_type=None, message=None)
        for q in recovered:
            states[q] = "succeeded"
        for q in reset:
            states[q] = "pending"
        return states

    def _payload(self, qid: str) -> tuple[dict, str]:
        q = self.graph.quanta[qid]
        info = self.graph.tasks[q.task]
        ds = self.graph.datasets
        inputs = {}
        for conn, ids in q.inputs.items():
            inputs[conn] = {"multiple": info.connections[conn]["multiple"],
                            "lazy": info.connections[conn].get("lazy", False),
                            "datasets": [{"path": ds[i].path, "formatter": ds[i].formatter, "data_id": ds[i].data_id,
                                          # what the runner checks the file against before reading it
                                          "dataset_type": ds[i].dataset_type, "checksum": ds[i].checksum,
                                          "size": ds[i].size, "mtime_ns": ds[i].mtime_ns}
                                         for i in ids if i not in self._missing]}
        outputs = {}
        for conn, (oid,) in q.outputs.items():
            n = ds[oid]
            outputs[conn] = {"id": oid, "path": n.path, "formatter": n.formatter, "dataset_type": n.dataset_type}
        records: dict[str, Any] = {}
        for dim in info.dimensions:
            req = self.butler.universe.required([dim])
            key = ",".join(f"{d}={q.data_id[d]}" for d in req)
            rec = self.graph.records.get(dim, {}).get(key)
            if rec is not None:
                records[dim] = rec
        for dim in info.related_records:  # a list: the targets of a field (PipelineTask.related_records)
            records[dim] = self.graph.related_records(dim, q.data_id)
        payload = {"quantum_id": qid, "task": q.task, "class_path": info.class_path, "config": info.config,
                   "data_id": q.data_id, "inputs": inputs, "outputs": outputs, "records": records,
                   "datastore_root": str(self.butler.datastore.root),
                   "logs": log_paths(self.run_dir, q.task, q.data_id, qid),
                   "checkpoint_dir": str(self.run_dir / "checkpoints" / q.task / data_id_dirname(q.data_id) / qid)}
        return payload, self.site.route(info.resources)

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> Summary:
        """Run what is left of the graph; the output run's writer lock is released however this ends."""
        try:
            return self._run()
        finally:
            self.close()

    def close(self) -> None:
        """Give up the writer lock without running (a CLI that stops between start/resume and run)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _init_loop(self, states: dict[str, str]) -> None:
        """The loop's bookkeeping over the graph from these starting states (live mode extends it as quanta arrive)."""
        upstream = self.graph.upstream()
        downstream: dict[str, set[str]] = defaultdict(set)
        for q, ups in upstream.items():
            for u in ups:
                downstream[u].add(q)
        waiting = {q: sum(1 for u in ups if states[u] not in DONE) for q, ups in upstream.items()}
        ready = [q for q in self.graph.quanta if states[q] == "pending" and waiting[q] == 0]
        # Pending quanta whose upstream already failed for good are blocked from the start.
        for q in list(self.graph.quanta):
            if states[q] in ("failed", "upstream_failed"):
                self._block_downstream(q, downstream, states)
        self._attempts: dict[str, int] = defaultdict(int)  # this session's, for retries
        self._prior = {r["id"]: r["attempts"] for r in self.status.rows()}  # earlier sessions', for the record
        self._overrides: dict[str, str] = {}
        self._manager_jobs: dict[str, str] = {}  # lost Parsl manager -> the SLURM job it ran in
        # Outputs that will never exist because their quantum found no work (this session or an earlier one).
        self._missing: set[str] = {d for r in self.status.rows("WHERE state = 'no_work'")
                                   for ids in self.graph.quanta[r["id"]].outputs.values() for d in ids}
        self._no_work_buffer: list[tuple[str, dict]] = []
        self._states, self._downstream, self._waiting, self._ready = states, downstream, waiting, ready
        self._running_buffer: list[tuple] = []
        self._done_q: queue.Queue = queue.Queue()
        self._inflight: dict[Any, list[str]] = {}
        self._parsl_tasks = 0
        # task -> wall times of its latest quanta (the median ignores the first ones, which pay for imports)
        self._durations: dict[str, deque] = defaultdict(lambda: deque(maxlen=32))
        self._stopped: str | None = None  # why the whole run must stop (a full disk), when it must

    def _start_parsl(self, quanta: int | None = None) -> Any:
        """Load Parsl for the site, with one app per executor; returns the DataFlowKernel.

        ``quanta``: at most this many quanta will be handed over (None: unknown, as in live mode).
        """
        with parsl_without_extras():  # the first quantum waits for this import: see lean_import
            from parsl import python_app

        from .runner import run_quanta_packed

        dfk = load_parsl(parsl_config(self.site, self.run_dir, quanta))
        self._apps = {e.label: python_app(run_quanta_packed, executors=[e.label], data_flow_kernel=dfk)
                      for e in self.site.executors}
        self._workers = sum((workers_per_node(e, quanta) or os.cpu_count() or 1) * e.provider.max_blocks
                            * e.provider.nodes_per_block for e in self.site.executors)
        return dfk

    def _run(self) -> Summary:
        t_start = time.time()
        # Parsl's interchange and worker pool are processes of their own: started first, they come up on the
        # other cores while this one registers the run and prepares its loop.
        starting = Background(lambda: self._start_parsl(len(self.graph.quanta)), "parsl-start")
        try:
            self._register_types_and_run()
            states = self._reconcile()
            self.status.set_meta("site_path", self.site_source if Path(self.site_source).exists() else None)
            self.status.set_meta("submit_pid", os.getpid())
            self.status.set_meta("submit_host", self.host)
            self.status.set_meta("submit_pid_start", process_start_time(os.getpid()))
            self.status.set_meta("state", "running")
            _best_effort((self.run_dir / RESERVE_FILE).write_bytes, b"\0" * RESERVE_BYTES)
            self.status.event("start", pid=os.getpid(), site=self.site_source, quanta=len(self.graph.quanta))
            self._init_loop(states)
        except BaseException:
            discard_parsl(starting)  # a refusal leaves no interchange or worker pool behind
            raise
        ready, done_q = self._ready, self._done_q
        interrupts = Interrupts().install()  # from here a Ctrl-C or SIGTERM ends the run in order
        try:
            dfk = starting.result()
        except BaseException:
            interrupts.restore()
            raise
        limit = self.site.max_in_flight or max(64, 16 * self._workers)
        try:
            try:
                last_progress = 0.0
                while (ready or self._inflight) and not interrupts.requested and not self._stopped:
                    while ready and len(self._inflight) < limit and not self._stopped:
                        self._submit(self._next_cluster())
                    self._flush_running()
                    batch = _drain(done_q, timeout=0.5, most=2000)
                    if batch:
                        self._finish_batch([(self._inflight.pop(f), f) for f in batch])
                    now = time.time()
                    if self.progress and (not batch or now - last_progress > 0.2):
                        last_progress = now
                        self.progress(_count(states), len(states))
                self._flush_running()
            except Exception as exc:
                if not is_disk_full(exc):
                    self._stopped = f"{type(exc).__name__}: {exc}"
                    _best_effort(self._end, time.time() - t_start, None)  # never left marked running
                    raise
                self._stopped = f"a disk is full ({_first_line(exc)})"
            summary = self._end(time.time() - t_start, interrupts.received)
        finally:
            stop_parsl(dfk, interrupts)  # bounded: a hung Parsl or a second Ctrl-C cannot keep the submit alive
            interrupts.restore()
        return summary

    def _end(self, wall_s: float, interrupted: str | None) -> Summary:
        """Write the run's final state and summary.json.

        Called before Parsl is cleaned up, which can block: whatever happens then, the run is never left marked
        ``running``. Quanta cut short go back to ``pending`` (their outputs were not registered), so ``--resume`` runs
        them again.

        A run stopped by a full disk ends ``failed``; the writes here are then best-effort (the status store
        may sit on that disk), and what could not be written is what ``--resume`` reconciles anyway.
        """
        stopped = self._stopped
        call = _best_effort if stopped else _call
        # give back the space set aside at the start: after a full disk the end state must still fit
        (self.run_dir / RESERVE_FILE).unlink(missing_ok=True)
        if interrupted or stopped:
            cut = [q for qids in self._inflight.values() for q in qids]
            self._states.update(dict.fromkeys(cut, "pending"))
            call(self.status.update_many, cut, state="pending")
            call(self.status.event, "interrupted" if interrupted else "stopped", signal=interrupted,
                 reason=stopped, running=len(cut))
        if self.progress:
            self.progress(_count(self._states), len(self._states))
        summary = call(self.summary, wall_s)
        if summary is None:  # the status store could not even be read back
            summary = Summary(self.run_dir, self.graph.output_run, {}, {}, wall_s, False)
        if interrupted:
            summary.extra["interrupted"] = interrupted
        if stopped:
            summary.ok = False
            summary.extra["stopped"] = stopped
            call(self.status.set_meta, "stopped", stopped)
        # summary.json first: whoever sees the final state (a watcher, a report) finds the summary there
        call((self.run_dir / SUMMARY_FILE).write_text, json.dumps(summary.to_json(), indent=1))
        call(self.status.set_meta, "state", "failed" if stopped else "interrupted" if interrupted else "finished")
        call(self.status.event, "end", ok=summary.ok, parsl_tasks=self._parsl_tasks)
        return summary

    def _next_cluster(self) -> list[str]:
        """The next ready quantum, with more ready quanta of the same task when that task's quanta are tiny.

        A quantum of a few milliseconds costs Parsl more than itself (submission, logging, two hops through
        the interchange), so once a task's quanta are seen to take under ``TINY_QUANTUM_S`` they travel in
        clusters lasting about ``CLUSTER_TARGET_S``, never so large that workers would sit idle.
        """
        first = self._ready.pop()
        task = self.graph.quanta[first].task
        seen = self._durations[task]
        typical = statistics.median(seen) if len(seen) >= 8 else None
        if typical is None or typical >= TINY_QUANTUM_S:
            return [first]
        size = min(MAX_CLUSTER, int(CLUSTER_TARGET_S / max(typical, 1e-4)),
                   1 + len(self._ready) // (2 * max(self._workers, 1)))
        cluster = [first]
        while len(cluster) < size and self._ready and self.graph.quanta[self._ready[-1]].task == task:
            cluster.append(self._ready.pop())
        return cluster

    def _submit(self, qids: str | list[str]) -> None:
        batch: dict[str, list] = defaultdict(list)
        for qid in [qids] if isinstance(qids, str) else qids:
            lacking = self._lacking_inputs(qid)
            if lacking:
                self._no_work(qid, lacking)
                continue
            payload, label = self._payload(qid)
            label = self._overrides.get(qid, label)
            self._attempts[qid] += 1
            self._states[qid] = "running"
            # Buffered: written in one transaction before the loop waits (a crash loses only "running" marks,
            # which resume treats like pending anyway).
            self._running_buffer.append((qid, self._prior.get(qid, 0) + self._attempts[qid], label, time.time()))
            batch[label].append((qid, payload))
        for label, items in batch.items():
            self._parsl_tasks += 1
            fut = self._apps[label](pickle.dumps([p for _, p in items], protocol=pickle.HIGHEST_PROTOCOL))
            self._inflight[fut] = [q for q, _ in items]
            fut.add_done_callback(self._done_q.put)

    def _lacking_inputs(self, qid: str) -> str | None:
        """Why the quantum cannot run because upstream quanta found no work, or None when it can."""
        if not self._missing:
            return None
        q = self.graph.quanta[qid]
        conns = self.graph.tasks[q.task].connections
        for conn, ids in q.inputs.items():
            have = sum(1 for i in ids if i not in self._missing)
            need = conns[conn].get("minimum", 1) if conns[conn]["multiple"] else len(ids)
            if have < max(need, 1 if ids else 0):
                gone = next(i for i in ids if i in self._missing)
                d = self.graph.datasets[gone]
                return f"input {conn} ({d.dataset_type} {d.data_id}) was not produced: its quantum found no work"
        return None

    def _no_work(self, qid: str, reason: str, manifest: dict | None = None) -> None:
        """Record a quantum that had nothing to do; its outputs join the missing set and its dependants move on."""
        self._states[qid] = "no_work"
        m = manifest or {}
        self._no_work_buffer.append((qid, {"state": "no_work", "message": reason[:2000], "error_kind": None,
                                           "error_type": None, **worker_fields(m)}))
        self._missing.update(d for ids in self.graph.quanta[qid].outputs.values() for d in ids)
        self._release_downstream(qid)

    def _release_downstream(self, qid: str) -> None:
        for d in self._downstream.get(qid, ()):
            self._waiting[d] -= 1
            if self._waiting[d] == 0 and self._states[d] == "pending":
                self._ready.append(d)

    def _flush_running(self) -> None:
        if self._no_work_buffer:
            self.status.update_rows(self._no_work_buffer)
            self._no_work_buffer.clear()
        if self._running_buffer:
            self.status.update_rows([(q, {"state": "running", "attempts": a, "executor": e, "started": t})
                                     for q, a, e, t in self._running_buffer])
            self._running_buffer.clear()

    def _finish_batch(self, items: list[tuple[list[str], Any]]) -> None:
        successes: list[tuple[str, dict]] = []
        for qids, fut in items:
            if fut.exception() is not None:
                for qid in qids:
                    learn_manager_job(fut.exception(), self.status.get(qid), self._manager_jobs)
        outcomes: list[tuple[str, dict[str, Any], str | None, str]] = []  # quantum, manifest, failure kind, message
        for qids, fut in items:
            exc = fut.exception()
            if exc is None:
                for qid, manifest in zip(qids, pickle.loads(fut.result()), strict=True):
                    outcomes.append((qid, manifest, *classify_manifest(manifest)))
                    self._durations[self.graph.quanta[qid].task].append(manifest.get("wall") or 0.0)
                continue
            for qid in qids:  # a lost worker or block takes the whole cluster with it
                row = self.status.get(qid)
                lost, message = classify_exception(exc, row, self._manager_jobs)
                outcomes.append((qid, {"error": {"type": type(exc).__name__, "message": message},
                                       "slurm_job_id": lost_job(exc, row, self._manager_jobs)}, lost, message))
        for qid, manifest, kind, message in outcomes:
            if kind is None and manifest.get("no_work"):
                self._no_work(qid, manifest["no_work"], manifest)
            elif kind is None:
                successes.append((qid, manifest))
            else:
                self._failed(qid, kind, message, manifest)
        self._flush_running()
        if not successes:
            return
        try:
            self._register(successes)
        except RegistryBusyError:  # one by one would wait as long again for each: stop in order; --resume registers
            raise
        except OpenAstroError:  # one bad apple: register one by one so only it fails
            kept = []
            for qid, manifest in successes:
                try:
                    self._register([(qid, manifest)])
                    kept.append((qid, manifest))
                except OpenAstroError as err:
                    self._failed(qid, "registry", str(err), {**manifest, "error": {"type": type(err).__name__,
                                                                                    "message": str(err)}})
            successes = kept
        self.status.update_rows([(qid, {"state": "succeeded", **worker_fields(m), "error_kind": None,
                                        "error_type": None, "message": None}) for qid, m in successes])
        for qid, _ in successes:
            self._states[qid] = "succeeded"
            self._release_downstream(qid)

    def _failed(self, qid: str, kind: str, message: str, manifest: dict) -> None:
        q = self.graph.quanta[qid]
        if kind == "disk_full" or is_disk_full(message):  # not the quantum's fault, and every other one would hit it too: stop the run
            self._stopped = self._stopped or f"a disk is full ({message[:500]})"
            self._states[qid] = "pending"
            _best_effort(self.status.update, qid, state="pending", error_kind=kind, message=message[:2000])
            return
        retryable = kind not in ("science", "registry")
        if retryable and self._attempts[qid] <= self.site.retries:
            if kind == "out_of_memory":
                bigger = self._bigger_executor(self.status.row(qid)["executor"])
                if bigger:
                    self._overrides[qid] = bigger
            self.status.event("retry", quantum=qid, kind=kind, attempt=self._attempts[qid], message=message[:500])
            self._states[qid] = "pending"
            self.status.update(qid, state="pending", error_kind=kind, message=message)
            self._submit(qid)
            return
        err = manifest.get("error") or {}
        self._states[qid] = "failed"
        self._flush_running()
        row = self.status.row(qid)
        self.status.update(qid, state="failed", error_kind=kind, error_type=err.get("type"), message=message,
                           **worker_fields(manifest))
        if self.on_failure:
            self.on_failure({"task": q.task, "data_id": q.data_id, "kind": kind, "type": err.get("type"),
                             "message": message, "stderr": row["stderr"]})
        self._block_downstream(qid, self._downstream, self._states)

    def _block_downstream(self, qid: str, downstream, states) -> None:
        todo, blocked = list(downstream.get(qid, ())), []
        while todo:
            d = todo.pop()
            if states.get(d) in ("pending",):
                states[d] = "upstream_failed"
                blocked.append(d)
                todo.extend(downstream.get(d, ()))
        if blocked:
            self.status.update_many(blocked, state="upstream_failed", error_kind="upstream_failed",
                                    message=f"blocked by failed quantum {qid}")

    def _bigger_executor(self, label: str | None) -> str | None:
        current = self.site.executor(label) if label else None
        mem = (current.mem_per_worker or 0) if current else 0
        bigger = [e for e in self.site.executors if (e.mem_per_worker or 0) > mem]
        return max(bigger, key=lambda e: e.mem_per_worker or 0).label if bigger else None

    def _register(self, done: list[tuple[str, dict]]) -> None:
        self.butler.registry.record_quanta(self.graph.output_run, self._registry_items(done))

    def _registry_items(self, done: list[tuple[str, dict]]) -> list[dict]:
        """What the registry records of finished quanta: outputs, inputs, provenance (live mode groups them by run)."""
        items = []
        for qid, manifest in done:
            q = self.graph.quanta[qid]
            info = self.graph.tasks[q.task]
            req = self.butler.universe.required(info.dimensions)
            outputs = [(self.graph.datasets[o["id"]].dataset_type, self.graph.datasets[o["id"]].data_id, o, o["id"])
                       for o in manifest["outputs"]]
            items.append({
                "quantum_id": qid, "task": q.task, "task_class": info.class_path,
                "data_id_key": ",".join(f"{d}={q.data_id[d]}" for d in req), "config_hash": info.config_hash,
                "outputs": outputs, "input_ids": [i for ids in q.inputs.values() for i in ids], "clobber": q.clobber,
                "provenance": {"host": manifest.get("host"), "slurm_job_id": manifest.get("slurm_job_id"),
                               "started": manifest.get("started"), "ended": manifest.get("ended"),
                               "packages": self.packages}})
        return items

    # -- results ------------------------------------------------------------------------------
    def summary(self, wall_s: float) -> Summary:
        return summarize(self.status, self.run_dir, self.graph.output_run, wall_s)


def summarize(status: StatusStore, run_dir: Path, output_run: str, wall_s: float) -> Summary:
    """The summary of a run, counted from its status store."""
    per_task: dict[str, dict[str, Any]] = {}
    kinds: dict[str, int] = defaultdict(int)
    skipped = status.meta("skipped", {}) or {}
    for row in status.rows():
        t = per_task.setdefault(row["task"], {**{s: 0 for s in STATES}, "wall_s": 0.0, "cpu_s": 0.0, "peak_mb": 0.0})
        t[row["state"]] += 1
        t["wall_s"] += row["wall"] or 0.0
        t["cpu_s"] += row["cpu"] or 0.0
        t["peak_mb"] = max(t["peak_mb"], row["maxrss_mb"] or 0.0)
        if row["state"] == "failed":
            kinds[row["error_kind"] or "unknown"] += 1
        elif row["state"] == "upstream_failed":
            kinds["upstream_failed"] += 1
    for label, n in skipped.items():
        per_task.setdefault(label, {**{s: 0 for s in STATES}, "wall_s": 0.0, "cpu_s": 0.0, "peak_mb": 0.0})["skipped"] += n
    for t in per_task.values():
        t["wall_s"] = round(t["wall_s"], 3)
        t["cpu_s"] = round(t["cpu_s"], 3)
        t["peak_mb"] = round(t["peak_mb"], 1)
    ok = all(t["failed"] == 0 and t["upstream_failed"] == 0 and t["pending"] == 0 and t["running"] == 0
             for t in per_task.values())
    return Summary(run_dir, output_run, per_task, dict(kinds), wall_s, ok)


def _count(states: dict[str, str]) -> dict[str, int]:
    out = {s: 0 for s in STATES}
    for s in states.values():
        out[s] += 1
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:500]


def _call(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def _best_effort(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``, giving up quietly on I/O and SQLite errors.

    Used while a run is stopped by a full disk, where the status store and summary may be unwritable and one clear
    message beats a cascade.
    """
    import sqlite3

    try:
        return fn(*args, **kwargs)
    except (OSError, sqlite3.Error):
        return None
    except Exception as exc:  # SQLAlchemy wraps the same errors
        if is_disk_full(exc):
            return None
        raise


def _drain(q: queue.Queue, timeout: float, most: int, linger: float = 0.05) -> list:
    """What finished so far, handled as one batch.

    Waits up to ``timeout`` for the first completion, then up to ``linger`` more for others, so that one registry and
    one status transaction serve many quanta (a commit costs about as much as the bookkeeping of ten quanta).
    """
    try:
        items = [q.get(timeout=timeout)]
    except queue.Empty:
        return []
    deadline = time.monotonic() + linger
    while len(items) < most:
        left = deadline - time.monotonic()
        try:
            items.append(q.get(timeout=left) if left > 0 else q.get_nowait())
        except queue.Empty:
            break
    return items
