"""The live engine: frames processed as they arrive, on one Parsl executor that stays up between them.

``LiveEngine`` is what the HTTP service (``live/service.py``) drives. Contract with the service:

- ``submit(exposures)`` takes the data IDs of just-ingested raws (``instrument`` and ``exposure`` at least),
  plans only the quanta they make possible and hands them to the running loop without waiting for them; it
  returns ``{"instrument=X,exposure=N": [quantum ids]}``. Calls arriving within ``batch_window_s`` of each other
  are planned together (a burst of uploads plans once). Submitting an exposure again plans nothing twice: the
  planner skips what is registered in the per-frame run (``--skip-existing-in``), and quanta still queued or
  running are recognised by their deterministic ids. The ids returned for an exposure are all its per-frame quanta
  known so far, including those registered by an earlier engine.
- raws are found in the engine's input collections: by default ``raw/all`` (created empty if missing; the
  service ingests accepted frames there unless told ``--raw-run``) then ``defaults`` when the repository has it
  (reference catalogues, orbits). ``inputs=`` overrides the list (a service ingesting elsewhere passes its raw run
  there); a restarted engine reuses the recorded one.
- outputs: per-frame quanta write the RUN ``live/<name>/prompt``; each version of a gathering task its own RUN
  ``live/<name>/<task>/<n>`` (``live/gather.py``); the CHAINED ``live/<name>`` searches the newest versions first,
  then the per-frame run. Plans read through that chain, so a frame's difference image uses the newest template.
- an exposure whose per-frame chain could not be planned to its end (no template or reference grid yet) is
  planned again after each gathering version.
- the run directory, with every quantum's logs and the status store ``openastro-status`` reads, is
  ``REPO/submit/live/<name>/prompt/<timestamp>/``; the per-frame run's writer lock makes a second engine of the
  same name refuse to start.

Planning and the loop run in one engine thread (``live/runloop.py``); callers wait only for planning.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..butler import Butler
from ..errors import OpenAstroError
from ..execution.runlock import RunLock
from ..execution.site import load_site
from ..execution.submit import new_run_dir
from ..graph.planner import Planner, PlanningError
from ..graph.quantum_graph import QuantumGraph, dataset_uuid, quantum_uuid
from ..pipeline.pipeline import Pipeline, TaskDef, load_pipeline
from ..registry.names import validate_collection_name
from .gather import GatherSchedule, next_version, parse_rules, selection_where, version_run
from .runloop import FINAL, WAKE, LiveSubmission

log = logging.getLogger(__name__)
DEFAULTS_CHAIN = "defaults"
RAW_RUN = "raw/all"
STOP_TIMEOUT_S = 60.0
WARM_MODULES = ("torch",)  # imported lazily by the real/bogus task; seconds a worker pays once, before any frame


def chain_name(name: str) -> str:
    return f"live/{name}"


def prompt_run(name: str) -> str:
    return f"live/{name}/prompt"


class LiveError(OpenAstroError):
    """The live engine cannot start, or was asked something it cannot do."""


@dataclass
class _Request:
    kind: str                     # "submit" | "tick"
    payload: Any = None
    arrived: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


@dataclass
class _Alert:
    registered: float
    dataset_id: str
    path: str
    formatter: str
    stamps: str | None
    collection: str


class LiveEngine:
    """Incremental processing of a live survey over one long-lived Parsl executor (see the module docstring)."""

    def __init__(self, repo_root: str | Path, pipeline: str, site: str | Path | None, name: str,
                 config_overrides: Sequence[str] = (), gather: dict | None = None, *,
                 inputs: Sequence[str] | None = None, batch_window_s: float = 0.3, tick_s: float | None = 5.0,
                 warm: Sequence[str] = WARM_MODULES):
        self.root = Path(repo_root).resolve()
        self.name = name
        validate_collection_name(chain_name(name), "live name")
        self.spec = str(pipeline)
        self.pipeline: Pipeline = load_pipeline(pipeline, list(config_overrides))
        self.site, self.site_source = load_site(site)
        self.universe = Butler(self.root).universe
        on = [t for t in self.pipeline if t.quantum_where is not None]  # tasks their config switches off plan nothing
        self.frame_tasks = [t for t in on if "exposure" in self.universe.expanded(t.dimensions)]
        self.gather_tasks = {t.label: t for t in on if t not in self.frame_tasks}
        if not self.frame_tasks:
            raise LiveError(f"{pipeline}: no task of the pipeline runs per exposure; live mode needs one "
                            f"(tasks: {', '.join(t.label for t in self.pipeline)})")
        self.rules = parse_rules(gather, self.gather_tasks)
        self._explicit_inputs = list(inputs) if inputs is not None else None
        self.batch_window_s = batch_window_s
        self.tick_s = tick_s
        self.warm = [t.class_path.rsplit(".", 1)[0] for t in self.pipeline] + list(warm)
        self.exposure_dims = self.universe.required(["exposure"])
        consumed = {n for t in self.frame_tasks for c in t.inputs() for n in c.dataset_types}
        self.leaf_tasks = [t.label for t in self.frame_tasks if not any(c.dataset_type in consumed for c in t.outputs())]
        self.plan_count = 0                       # plans of frames made (micro-batching is seen here)
        self.plan_errors: dict[str, str] = {}     # exposure key -> why its quanta could not be planned
        self.gather_errors: dict[str, str] = {}   # gathering task -> why its last version could not be planned
        self.versions: list[dict] = []            # gathering versions finished this session
        self._requests: queue.Queue[_Request] = queue.Queue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._sub: LiveSubmission | None = None
        self._earlier: dict[str, dict] = {}       # quanta registered by an earlier engine: id -> task, data ID
        self._alerts: list[_Alert] = []
        self._alert_docs: dict[str, dict] = {}
        self._waiting: dict[str, dict] = {}       # exposures whose chain could not be planned to its end
        self._open_versions: dict[str, tuple[str, list[str]]] = {}  # run -> (task, its quanta)

    # -- public --------------------------------------------------------------------------------
    @property
    def inputs(self) -> list[str]:
        return self._inputs

    def start(self) -> None:
        """Open the executor and the loop thread (once; later calls do nothing)."""
        if self._thread is not None:
            if self._failure is not None:
                raise LiveError(f"live engine {self.name!r} stopped: {self._failure}")
            return
        self._ready.clear()
        self._stop.clear()
        self._failure = None
        self._thread = threading.Thread(target=self._main, name=f"live-engine-{self.name}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            failure, self._thread = self._failure, None
            raise failure

    def submit(self, exposures: list[dict]) -> dict[str, list[str]]:
        """Plan and queue the quanta these new exposures enable; returns their ids per exposure key."""
        keys = {}
        for e in exposures:
            missing = [d for d in self.exposure_dims if d not in e]
            if missing:
                raise LiveError(f"exposure data ID {e!r} lacks {', '.join(missing)}")
            did = {d: self.universe.coerce(d, e[d]) for d in self.exposure_dims}
            keys[self._key(did)] = did
        if not keys:
            return {}
        return self._call("submit", keys)

    def tick(self) -> None:
        """Plan the gathering tasks that are due (the loop also does this every ``tick_s``)."""
        self._call("tick", None)

    def states(self, quantum_ids: list[str]) -> dict[str, dict]:
        """``{id: {task, data_id, state}}`` for the quanta this engine knows (unknown ids are left out)."""
        sub = self._sub
        out = sub.states_of(quantum_ids) if sub is not None else {}
        for qid in quantum_ids:
            if qid not in out and qid in self._earlier:
                out[qid] = {**self._earlier[qid], "state": "succeeded"}
        return out

    def alerts_since(self, since: float) -> list[dict]:
        """Alert records registered in ``live/<name>`` after ``since`` (epoch seconds), oldest first.

        Each carries its exposure (``instrument``, ``exposure``, ``band``, ``mjd``), ``registered`` (when its dataset
        was written), ``collection`` and ``stamps`` (the PNG of the exposure's alert cutouts, an absolute path).
        """
        if self._sub is None:
            return []
        store = self._sub.butler.datastore
        out = []
        for a in list(self._alerts):
            if a.registered <= since:
                continue
            doc = self._alert_docs.get(a.dataset_id)
            if doc is None:
                doc = self._alert_docs[a.dataset_id] = store.read(a.path, a.formatter)
            head = {k: doc.get(k) for k in ("instrument", "exposure", "band", "mjd")}
            for rec in doc.get("alerts", []):
                out.append({**rec, **head, "registered": a.registered, "collection": a.collection,
                            "stamps": a.stamps})
        return out

    def stop(self) -> None:
        """Stop the loop and Parsl; quanta cut short are planned again by the next engine."""
        if self._thread is None:
            return
        self._stop.set()
        if self._sub is not None:
            self._sub._done_q.put(WAKE)
        self._thread.join(STOP_TIMEOUT_S)
        self._thread = None

    def __enter__(self) -> "LiveEngine":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the engine thread ---------------------------------------------------------------------
    def _call(self, kind: str, payload: Any) -> Any:
        self.start()
        req = _Request(kind, payload)
        self._requests.put(req)
        assert self._sub is not None
        self._sub._done_q.put(WAKE)
        while not req.done.wait(0.5):
            if self._thread is None or not self._thread.is_alive():
                raise LiveError(f"live engine {self.name!r} stopped: {self._failure or 'stop() was called'}")
        if req.error is not None:
            raise req.error
        return req.result

    def _main(self) -> None:
        try:
            sub = self._open()
            dfk = sub.open(self._registered, self.warm)
            self._load_alerts(sub.butler)
        except BaseException as exc:  # noqa: BLE001 - handed to start()
            self._failure = exc
            if self._sub is not None:
                self._sub.close()
            self._ready.set()
            return
        self._ready.set()
        next_tick = time.monotonic() + (self.tick_s or 0)
        try:
            while not self._stop.is_set():
                self._serve()
                if self.tick_s and time.monotonic() >= next_tick:
                    self._guarded(self._run_due)
                    next_tick = time.monotonic() + self.tick_s
                self._guarded(self._finish_versions)
                sub.step(0.25)
        except BaseException as exc:
            log.exception("live engine %s stopped", self.name)
            self._failure = exc
        finally:
            for req in self._drain_requests():
                req.error = LiveError(f"live engine {self.name!r} stopped")
                req.done.set()
            sub.close_run(dfk)

    def _guarded(self, fn) -> None:
        """Gathering bookkeeping that fails (a registry error) is logged and tried again later; frames go on."""
        try:
            fn()
        except OpenAstroError as exc:
            self.gather_errors["*"] = str(exc)
            log.warning("live %s: %s", self.name, exc)

    def _open(self) -> LiveSubmission:
        butler = Butler(self.root)
        reg = butler.registry
        run = prompt_run(self.name)
        recorded = reg.run_inputs(run) if reg.has_collection(run) else None
        if self._explicit_inputs is not None:
            extra = self._explicit_inputs
        elif recorded is not None:
            extra = [c for c in recorded if c != chain_name(self.name)]
        else:
            reg.register_run(RAW_RUN)  # frames arrive there: the recorded inputs must name it from the start
            extra = [RAW_RUN] + ([DEFAULTS_CHAIN] if reg.has_collection(DEFAULTS_CHAIN) else [])
        self._inputs = [chain_name(self.name)] + list(extra)
        if recorded is not None and recorded != self._inputs:
            raise LiveError(f"live run {self.name!r} reads {recorded[1:]}; this engine was given {self._inputs[1:]} "
                            f"(use the same inputs, or another name)")
        for c in extra:
            if not reg.has_collection(c):
                raise LiveError(f"input collection {c!r} of live engine {self.name!r} does not exist")
        reg.register_run(run, doc=f"per-frame outputs of live run {self.name}")
        if reg.run_inputs(run) is None:
            reg.set_collection_meta(run, "inputs", self._inputs)
            reg.set_collection_meta(run, "pipeline", self.spec)
        if not reg.has_collection(chain_name(self.name)):
            reg.set_chain(chain_name(self.name), [run])
            reg.set_collection_doc(chain_name(self.name), "live run: newest gathering versions, then per-frame outputs")
        lock = RunLock(butler.root, run).acquire()
        try:
            run_dir = new_run_dir(butler, run)
            lock.set_run_dir(run_dir)
            header: dict[str, Any] = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "repo": str(butler.root),
                      "repo_id": butler.repo_id, "datastore_root": str(butler.datastore.root), "pipeline": self.spec,
                      "inputs": self._inputs, "output_run": run, "where": "", "binds": {}, "live": self.name}
            graph = QuantumGraph(header, {}, {}, {}, {}, {})
            self._sub = LiveSubmission(butler, graph, run_dir, self.site, self.site_source, lock=lock)
        except BaseException:
            lock.release()
            raise
        labels = list(self.gather_tasks)
        consumes: dict[str, list[str]] = {}
        for label in labels:
            for c in self.gather_tasks[label].inputs():
                for n in c.dataset_types:
                    consumes.setdefault(n, []).append(label)
        self.schedule = GatherSchedule(self.rules, consumes,
                                       {lb: self.universe.expanded(self.gather_tasks[lb].dimensions) for lb in labels})
        for label in labels:
            self.schedule.made[label] = next_version(reg, self.name, label) - 1
        return self._sub

    def _drain_requests(self) -> list[_Request]:
        out = []
        while True:
            try:
                out.append(self._requests.get_nowait())
            except queue.Empty:
                return out

    def _serve(self) -> None:
        reqs = self._drain_requests()
        if not reqs:
            return
        if any(r.kind == "submit" for r in reqs):  # wait out the batching window for more uploads
            deadline = min(r.arrived for r in reqs if r.kind == "submit") + self.batch_window_s
            while (left := deadline - time.monotonic()) > 0:
                try:
                    reqs.append(self._requests.get(timeout=left))
                except queue.Empty:
                    break
        submits = [r for r in reqs if r.kind == "submit"]
        if submits:
            keys: dict[str, dict] = {}
            for r in submits:
                keys.update(r.payload)
            try:
                result = self._plan_frames(keys)
                for r in submits:
                    r.result = {k: result[k] for k in r.payload}
            except Exception as exc:  # noqa: BLE001 - the callers get it; the engine goes on
                for r in submits:
                    r.error = exc
            for r in submits:
                r.done.set()
        for r in reqs:
            if r.kind == "tick":
                try:
                    self._run_due()
                except Exception as exc:  # noqa: BLE001
                    r.error = exc
                r.done.set()

    # -- planning ------------------------------------------------------------------------------
    def _key(self, did: Mapping[str, Any]) -> str:
        return ",".join(f"{d}={did[d]}" for d in self.exposure_dims)

    def _plan(self, tasks: list[TaskDef], run: str, where: str, binds: dict, skip: bool) -> QuantumGraph | None:
        assert self._sub is not None
        planner = Planner(self._sub.butler, replace(self.pipeline, tasks=tasks), inputs=self._inputs, output_run=run,
                          where=where, binds=binds, skip_existing_in=[run] if skip else (), pipeline_spec=self.spec)
        try:
            return planner.plan()
        except PlanningError as exc:
            if str(exc).startswith("empty quantum graph"):
                return None
            raise

    def _plan_frames(self, keys: dict[str, dict]) -> dict[str, list[str]]:
        """One plan for all these exposures (each alone when the batch fails), merged into the running loop."""
        self._plan_some(keys)
        return self._quanta_of(keys)

    def _plan_some(self, keys: dict[str, dict]) -> None:
        by_instrument: dict[Any, list] = {}
        for did in keys.values():
            by_instrument.setdefault(did.get("instrument"), []).append(did)
        terms, binds = [], {}
        for i, (inst, dids) in enumerate(by_instrument.items()):
            binds[f"i{i}"], binds[f"x{i}"] = inst, [d["exposure"] for d in dids]
            terms.append(f"(instrument = i{i} AND exposure IN (x{i}))")
        self.plan_count += 1
        try:
            graph = self._plan(self.frame_tasks, prompt_run(self.name), " OR ".join(terms), binds, skip=True)
        except PlanningError as exc:
            if len(keys) > 1:
                for k, did in keys.items():
                    self._plan_some({k: did})
                return
            (key,) = keys
            self.plan_errors[key] = str(exc)
            log.warning("live %s: %s: %s", self.name, key, exc)
            return
        for k in keys:
            self.plan_errors.pop(k, None)
        if graph is not None:
            assert self._sub is not None
            self._sub.merge(graph, self._inputs, self.spec)

    def _quanta_of(self, keys: dict[str, dict]) -> dict[str, list[str]]:
        """Every per-frame quantum of each exposure known so far; exposures lacking a leaf task wait for gathering."""
        assert self._sub is not None
        run = prompt_run(self.name)
        graph = self._sub.graph
        expected: dict[str, list[tuple[str, str, dict]]] = {}
        probe: dict[str, str] = {}  # an output id of each quantum not in the loop's graph -> that quantum
        for key, did in keys.items():
            rows = expected[key] = []
            for t in self.frame_tasks:
                req = self.universe.required(t.dimensions)
                if not set(req) <= set(did):
                    continue
                qkey = ",".join(f"{d}={did[d]}" for d in req)
                qid = quantum_uuid(run, t.label, qkey)
                rows.append((qid, t.label, {d: did[d] for d in req}))
                if qid not in graph.quanta and qid not in self._earlier:
                    out = t.outputs()[0]
                    okey = ",".join(f"{d}={did[d]}" for d in self.universe.required(out.dimensions))
                    probe[dataset_uuid(run, out.dataset_type, okey)] = qid
        found = self._sub.butler.registry.existing_dataset_ids(probe) if probe else set()
        registered = {probe[i] for i in found}
        result = {}
        for key, rows in expected.items():
            have = []
            for qid, label, did in rows:
                if qid in registered:
                    self._earlier[qid] = {"task": label, "data_id": did}
                if qid in graph.quanta or qid in self._earlier:
                    have.append(qid)
            result[key] = have
            labels = {graph.quanta[q].task if q in graph.quanta else self._earlier[q]["task"] for q in have}
            if set(self.leaf_tasks) <= labels:
                self._waiting.pop(key, None)
            else:
                self._waiting[key] = keys[key]
        return result

    # -- gathering -----------------------------------------------------------------------------
    def _run_due(self) -> None:
        for label in self.schedule.due():
            self._gather(label, self.schedule.take(label))

    def _gather(self, label: str, selections: list[dict]) -> None:
        assert self._sub is not None
        reg = self._sub.butler.registry
        run = version_run(self.name, label, next_version(reg, self.name, label))
        where, binds = selection_where(selections)
        try:
            graph = self._plan([self.gather_tasks[label]], run, where, binds, skip=False)
        except PlanningError as exc:
            self.gather_errors[label] = str(exc)
            self.schedule.made[label] -= 1
            log.warning("live %s: gathering task %s not planned: %s", self.name, label, exc)
            return
        if graph is None:
            self.schedule.made[label] -= 1
            return
        self.gather_errors.pop(label, None)
        added = self._sub.merge(graph, self._inputs, self.spec)
        self._open_versions[run] = (label, added)
        log.info("live %s: %s version %s: %d quanta", self.name, label, run, len(added))

    def _finish_versions(self) -> None:
        """Put each finished gathering version first in the chain; then re-plan the exposures waiting for it."""
        assert self._sub is not None
        states = self._sub._states
        finished = [r for r, (_, qids) in self._open_versions.items() if all(states.get(q) in FINAL for q in qids)]
        for run in finished:
            label, qids = self._open_versions[run]
            ok = sum(states[q] == "succeeded" for q in qids)
            if ok:
                reg = self._sub.butler.registry
                chain = chain_name(self.name)
                children = [c for c in reg.query_collections(chain)[0].children if c != run]
                reg.set_chain(chain, [run] + children)
            del self._open_versions[run]
            self.versions.append({"task": label, "run": run, "quanta": len(qids), "succeeded": ok,
                                  "finished": time.time()})
        if finished and self._waiting:
            self._plan_some(dict(self._waiting))
            self._quanta_of(dict(self._waiting))

    # -- what was registered -------------------------------------------------------------------
    def _registered(self, items: list[tuple[str, str, dict]]) -> None:
        self.schedule.note(items)
        assert self._sub is not None
        graph = self._sub.graph
        now = time.time()
        for dataset_type, did, _ in items:
            if dataset_type != "alerts":
                continue
            node = graph.datasets[did]
            q = graph.quanta[self._sub._producers[did]]
            stamps = next((graph.datasets[i].path for ids in q.outputs.values() for i in ids
                           if graph.datasets[i].dataset_type == "alertStamps"), None)
            self._alerts.append(_Alert(now, did, node.path, node.formatter,
                                       str(self._sub.butler.datastore.abspath(stamps)) if stamps else None, node.run))

    def _load_alerts(self, butler: Butler) -> None:
        """Alerts registered before this engine started, timed by their files."""
        reg = butler.registry
        if reg.get_dataset_type("alerts", missing_ok=True) is None:
            return
        chain = [chain_name(self.name)]
        stamps = {}
        if reg.get_dataset_type("alertStamps", missing_ok=True) is not None:
            stamps = {self._key(r.data_id): butler.path(r) for r in reg.query_datasets("alertStamps", chain)}
        for ref in sorted(reg.query_datasets("alerts", chain), key=lambda r: r.mtime_ns or 0):
            path, formatter = ref.location()
            t = (ref.mtime_ns or 0) / 1e9
            s = stamps.get(self._key(ref.data_id))
            self._alerts.append(_Alert(t, ref.id, path, formatter, str(s) if s else None, ref.run))
