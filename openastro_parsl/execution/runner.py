"""Worker side: run one quantum from its payload and return a manifest. Never touches the registry.

Runs inside a Parsl HTEX worker. Parsl does not redirect a python_app's output, so the runner points file
descriptors 1 and 2 at the quantum's own log files for the duration (C extensions such as sep or TTVFast
write there too) and adds a JSON-lines log of the task's logging records. A task's exception is caught and
reported in the manifest (it is deterministic: retrying it would fail the same way); anything that kills
the worker surfaces in the submit process as a Parsl error instead, and is classed as infrastructure.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from .usage import QuantumUsage, worker_identity


class _JsonLines(logging.Handler):
    def __init__(self, stream, context: dict[str, Any]):
        super().__init__()
        self.stream = stream
        self.context = context

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = {"time": round(record.created, 3), "level": record.levelname, "logger": record.name,
                     "message": record.getMessage(), **self.context}
            if record.exc_info:
                entry["exception"] = "".join(traceback.format_exception(*record.exc_info))
            self.stream.write(json.dumps(entry, default=str) + "\n")
            self.stream.flush()
        except Exception:  # logging must never break the task
            self.handleError(record)


@functools.lru_cache(maxsize=1)
def _libc():
    return ctypes.CDLL(None)


def _fflush_c() -> None:
    """Flush C stdio buffers so a C extension's output lands in the quantum's log, not the next one's."""
    try:
        _libc().fflush(None)
    except Exception:
        pass


@contextlib.contextmanager
def captured_output(stdout_path: Path, stderr_path: Path):
    """Send fds 1 and 2 (and sys.stdout/err) to the given files, restoring everything afterwards."""
    sys.stdout.flush()
    sys.stderr.flush()
    _fflush_c()
    saved = (os.dup(1), os.dup(2))
    saved_py = (sys.stdout, sys.stderr)
    out = open(stdout_path, "ab", buffering=0)
    err = open(stderr_path, "ab", buffering=0)
    try:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout = io.TextIOWrapper(os.fdopen(os.dup(1), "wb"), line_buffering=True)
        sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(2), "wb"), line_buffering=True)
        yield
    finally:
        for s in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                s.flush()
                s.close()
        _fflush_c()
        sys.stdout, sys.stderr = saved_py
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        out.close()
        err.close()


def _check_input(d: dict, path: Path, mode: str) -> None:
    """Refuse an input whose file is not the one registered (edited, replaced or gone since).

    A raw changed in place would otherwise be processed silently. Outputs of this run's own quanta carry no
    checksum yet.
    """
    from ..datastore.checksum import InputChecksumError, changed_checksum

    if not d.get("checksum"):
        return
    found = changed_checksum(path, d["checksum"], size=d.get("size"), mtime_ns=d.get("mtime_ns"), mode=mode)
    if found is not None:
        what = f"input {d['dataset_type']} {d['data_id']}"
        if found == "missing":
            raise InputChecksumError(f"{what}: file {path} is missing")
        raise InputChecksumError(f"{what}: file {path} is not the registered one: sha256 expected {d['checksum']}, "
                                 f"found {found}")


def _read_inputs(payload: dict, root: Path) -> tuple[dict[str, Any], dict[str, list[dict]]]:
    from ..datastore.checksum import verify_mode
    from ..datastore.formatters import formatter_named

    mode = verify_mode()
    objs: dict[str, Any] = {}
    data_ids: dict[str, list[dict]] = {}
    for conn, spec in payload["inputs"].items():
        items = []
        for d in spec["datasets"]:
            path = Path(d["path"])
            path = path if path.is_absolute() else root / path
            _check_input(d, path, mode)
            items.append(formatter_named(d["formatter"]).read(path, {"lazy": True} if spec.get("lazy") else None))
        objs[conn] = items if spec["multiple"] else items[0]
        data_ids[conn] = [d["data_id"] for d in spec["datasets"]]
    return objs, data_ids


def _write_outputs(payload: dict, result: Any, root: Path, manifest: dict) -> None:
    """Write every declared output atomically; a task returning other outputs than it declares is an error."""
    from ..datastore.datastore import Datastore
    from ..pipeline.task import check_outputs

    result = check_outputs(payload["class_path"], result, payload["outputs"])
    store = Datastore(root)
    for conn, spec in payload["outputs"].items():
        loc = store.write_at(result[conn], spec["path"], spec["formatter"], what=f"{spec['dataset_type']}")
        manifest["outputs"].append({"id": spec["id"], "connection": conn, **loc})


def run_quanta_packed(blob: bytes) -> bytes:
    """Run a pickled list of quantum payloads one after another; return their pickled manifests.

    Pickled because Parsl serialises arguments with dill's pure-Python pickler, which costs more than a small
    quantum's own bookkeeping; bytes pass through it at once. A list because quanta much shorter than Parsl's
    per-task overhead are sent in small clusters (see ``Submission``); each still gets its own logs and
    manifest, and one quantum's failure does not touch the others.
    """
    import pickle

    return pickle.dumps([run_quantum(p) for p in pickle.loads(blob)], protocol=pickle.HIGHEST_PROTOCOL)


def run_quantum(payload: dict) -> dict:
    """Execute one quantum; return {quantum_id, ok, outputs, error, metrics...}. Runs in a Parsl worker."""
    from ..pipeline.task import NoWorkFound, import_task, run_extras

    usage = QuantumUsage()
    t0 = time.time()
    root = Path(payload["datastore_root"])
    logs = {k: Path(v) for k, v in payload["logs"].items()}
    logs["stdout"].parent.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "quantum_id": payload["quantum_id"], "ok": False, "outputs": [], "error": None, **worker_identity(),
        "started": t0,
    }
    # Host and SLURM job go in every record: if the node dies, the submit process learns from this log
    # which job the quantum was in and can ask SLURM how that job ended.
    context = {"quantum": payload["quantum_id"], "task": payload["task"], "data_id": payload["data_id"],
               "host": manifest["host"], "slurm_job_id": manifest["slurm_job_id"]}
    root_logger = logging.getLogger()
    with captured_output(logs["stdout"], logs["stderr"]), open(logs["jsonl"], "a") as jl:
        human = logging.StreamHandler(sys.stderr)
        human.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        structured = _JsonLines(jl, context)
        old_level = root_logger.level
        root_logger.addHandler(human)
        root_logger.addHandler(structured)
        root_logger.setLevel(logging.INFO)
        log = logging.getLogger(f"openastro.task.{payload['task']}")
        try:
            log.info("quantum %s start: %s", payload["quantum_id"], payload["data_id"])
            cls = import_task(payload["class_path"])
            config = cls.Config.model_validate(payload["config"])
            task = cls(config, log=log)
            inputs, data_ids = _read_inputs(payload, root)
            inputs.update(run_extras(task, data_id=payload["data_id"], data_ids=data_ids,
                                     records=payload.get("records", {}), checkpoint_dir=payload.get("checkpoint_dir")))
            try:
                result = task.run(**inputs)
            except NoWorkFound as nothing:
                manifest["no_work"] = str(nothing) or "no work found"
                log.info("quantum %s: no work: %s", payload["quantum_id"], manifest["no_work"])
            else:
                _write_outputs(payload, result, root, manifest)
            manifest["ok"] = True
            log.info("quantum %s done in %.2f s", payload["quantum_id"], time.time() - t0)
        except BaseException as exc:  # noqa: BLE001 - everything a task raises is reported, never lost
            tb = traceback.format_exc()
            sys.stderr.write(tb)
            log.error("quantum %s failed: %s: %s", payload["quantum_id"], type(exc).__name__, exc)
            manifest["error"] = {"type": type(exc).__name__, "message": str(exc)[:2000],
                                 "traceback": tb[-6000:], "memory": isinstance(exc, MemoryError)}
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                manifest["error"]["killed"] = True
        finally:
            root_logger.removeHandler(human)
            root_logger.removeHandler(structured)
            root_logger.setLevel(old_level)
    manifest["ended"] = time.time()
    manifest["wall"] = manifest["ended"] - t0
    manifest.update(usage.finish())  # cpu, maxrss_mb (this quantum's peak where the kernel allows), rss_scope
    return manifest
