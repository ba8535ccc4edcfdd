"""The quantum graph: quanta (one task on one data ID) linked through the datasets they read and write.

It is self-contained: every input dataset carries its file path, formatter, checksum, size and mtime, every
output its predicted path and id, and every task its resolved config, so a submit on another node runs the
graph with no registry lookup for inputs. Saved as versioned, gzipped JSON laid out per dataset type and per task: in
columns since version 3 (``columns``), one row per item in version 2, which is still read (and written on request).
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import re
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, cast

import orjson
from isal import igzip  # ISA-L's gzip: the same files, written 3x and read 3x faster than with zlib
from isal.igzip_lib import IsalError

from ..datastore.datastore import check_relpath, run_relpath
from ..errors import DatastorePathError, OpenAstroError
from . import columns

FORMAT = "openastro-qgraph"
VERSION = 3      # 2: dataset rows carry size and mtime_ns (at 6 and 7; data ID values from 8); 3: columns
READABLE = (1, 2, 3)
WRITABLE = (2, 3)
# not gzip, truncated, damaged (isal's stub types its error as an instance)
_UNREADABLE: tuple[type[BaseException], ...] = (OSError, ValueError, EOFError, cast(type[BaseException], IsalError))
_NS = uuid.UUID("8f1c7f4e-5d0b-4b7e-9a55-0e6b8f3b2a10")
_NS_BYTES = _NS.bytes  # UUID.bytes builds a new bytes object at every call


_VARIANT = {c: f"{int(c, 16) & 0x3 | 0x8:x}" for c in "0123456789abcdef"}  # RFC 4122 variant bits of one hex digit


def uuid5_maker(prefix: str) -> Callable[[str], str]:
    """``lambda rest: str(uuid.uuid5(_NS, prefix + rest))`` without UUID objects, the prefix encoded once.

    The planner makes ~2 ids per quantum, all of a task sharing their prefix.
    """
    head, sha1, variant = _NS_BYTES + prefix.encode(), hashlib.sha1, _VARIANT

    def make(rest: str) -> str:
        h = sha1(head + rest.encode()).hexdigest()
        return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{variant[h[16]]}{h[17:20]}-{h[20:32]}"
    return make


def uuid5_many(prefix: str, rests: Iterable[str]) -> list[str]:
    """``list(map(uuid5_maker(prefix), rests))`` as two comprehensions, no Python call per id (the planner's way)."""
    head, sha1, variant = _NS_BYTES + prefix.encode(), hashlib.sha1, _VARIANT
    digests = [sha1(head + rest.encode()).hexdigest() for rest in rests]
    return [f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{variant[h[16]]}{h[17:20]}-{h[20:32]}" for h in digests]


def _uuid5(name: str) -> str:
    """``str(uuid.uuid5(_NS, name))``."""
    return uuid5_maker("")(name)


def dataset_uuid(run: str, dataset_type: str, data_id_key: str) -> str:
    """Deterministic id of a predicted output: replanning or resuming a run names the same dataset the same."""
    return _uuid5(f"dataset:{run}:{dataset_type}:{data_id_key}")


def quantum_uuid(run: str, label: str, data_id_key: str) -> str:
    """Deterministic id of a quantum: replanning or resuming a run names the same quantum the same."""
    return _uuid5(f"quantum:{run}:{label}:{data_id_key}")


def dataset_uuids(run: str, dataset_type: str, data_id_keys: Iterable[str]) -> list[str]:
    """``dataset_uuid`` of one run and dataset type for each of many data ID keys."""
    return uuid5_many(f"dataset:{run}:{dataset_type}:", data_id_keys)


def quantum_uuids(run: str, label: str, data_id_keys: Iterable[str]) -> list[str]:
    """``quantum_uuid`` of one run and task for each of many data ID keys."""
    return uuid5_many(f"quantum:{run}:{label}:", data_id_keys)


@contextmanager
def paused_gc():
    """Pause the cyclic garbage collector while a big graph is built or read.

    Building or reading 100k-quantum graphs makes millions of small objects and no garbage cycles; the cyclic collector
    would rescan them all repeatedly for nothing.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            # What was made while paused goes straight to the oldest generation: enabling the collector with a
            # million new objects in the youngest would make its next allocation scan them all (~10 ms at 10k quanta).
            gc.freeze()
            gc.enable()
            gc.unfreeze()


def _dumps(obj: Any) -> bytes:
    """Compact JSON of plain rows: orjson, or json for what orjson refuses (integers past 64 bits)."""
    try:
        return orjson.dumps(obj)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(obj, separators=(",", ":")).encode()


def _all_finite(records: dict[str, dict[str, dict[str, Any]]]) -> bool:
    """No float in the records is NaN or infinite (values of other types are not looked at)."""
    for table in records.values():
        for rec in table.values():
            for v in rec.values():
                if v.__class__ is float and not math.isfinite(v):
                    return False
    return True


class GraphFormatError(OpenAstroError):
    """A saved quantum graph is unreadable or of an unknown version."""


def _upgrade_v1(doc: dict[str, Any]) -> None:
    """Version 1 rows lack size and mtime_ns: give them None ("not recorded", so workers hash those inputs).

    So a graph saved before, or a run directory made with it, still loads and resumes.
    """
    for block in doc["datasets"].values():
        block["rows"] = [row[:6] + [None, None] + row[6:] for row in block["rows"]]


@dataclass(slots=True)
class DatasetNode:
    """A dataset a graph reads or writes: an existing one, or a predicted output (``exists`` False)."""

    id: str
    dataset_type: str
    data_id: dict[str, Any]
    run: str
    path: str                  # relative to the datastore root, or absolute (directly ingested files)
    formatter: str
    checksum: str | None = None
    exists: bool = True        # False for a predicted output
    size: int | None = None    # size and mtime recorded with the checksum: a worker that finds them unchanged
    mtime_ns: int | None = None  # trusts the file without hashing it (None: hash it)


@dataclass(slots=True)
class Quantum:
    """One execution of one task on one data ID: the ids of its input and predicted output datasets."""

    id: str
    task: str
    data_id: dict[str, Any]
    inputs: dict[str, list[str]]       # connection name -> dataset ids (prerequisites included)
    outputs: dict[str, list[str]]
    clobber: list[str] = field(default_factory=list)  # ids of partial old outputs to replace


@dataclass
class TaskInfo:
    """What a graph keeps of a task: class, resolved config and its hash, dimensions, connections, resources."""

    label: str
    class_path: str
    config: dict[str, Any]
    config_hash: str
    dimensions: tuple[str, ...]
    connections: dict[str, dict[str, Any]]   # name -> {dataset_type, dimensions, storage_class, multiple, kind}
    resources: dict[str, Any]
    related_records: tuple[str, ...] = ()  # PipelineTask.related_records


@dataclass
class QuantumGraph:
    """The DAG of quanta a submit executes, producers first; saved and loaded as gzipped JSON."""

    header: dict[str, Any]
    tasks: dict[str, TaskInfo]
    dataset_types: dict[str, dict[str, Any]]   # name -> {dimensions, storage_class, formatter}
    datasets: dict[str, DatasetNode]
    quanta: dict[str, Quantum]                  # in an order where producers come before consumers
    records: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # dim -> data ID key -> record

    # -- structure ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.quanta)

    def producers(self) -> dict[str, str]:
        """Dataset id -> id of the quantum that writes it."""
        return {d: q.id for q in self.quanta.values() for ids in q.outputs.values() for d in ids}

    def upstream(self) -> dict[str, set[str]]:
        """Quantum id -> ids of the quanta whose outputs it reads."""
        prod = self.producers()
        return {q.id: {prod[d] for ids in q.inputs.values() for d in ids if d in prod} for q in self.quanta.values()}

    def downstream(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {q: set() for q in self.quanta}
        for q, ups in self.upstream().items():
            for u in ups:
                out[u].add(q)
        return out

    def counts_by_task(self) -> dict[str, int]:
        out = {label: 0 for label in self.tasks}
        for q in self.quanta.values():
            out[q.task] += 1
        return out

    def by_task(self, label: str) -> Iterator[Quantum]:
        return (q for q in self.quanta.values() if q.task == label)

    @property
    def output_run(self) -> str:
        return self.header["output_run"]

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | Path, version: int = VERSION) -> None:
        """Write the graph (atomically); ``version=2`` writes the row layout older openastro-parsl reads."""
        if version not in WRITABLE:
            raise GraphFormatError(f"cannot write quantum graph format version {version}; versions "
                                   f"{', '.join(map(str, WRITABLE))} are written")
        with paused_gc():
            payload = self._payload_v3() if version == 3 else self._payload_v2()
            path = Path(path)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(igzip.compress(payload, compresslevel=1))
            tmp.replace(path)

    def _small(self, version: int, runs: dict[str, int]) -> bytes:
        """The header part (plain json: a header may hold what orjson refuses), without its closing brace."""
        small = {
            "format": FORMAT, "version": version, "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "header": self.header,
            "tasks": {k: vars(t) | {"dimensions": list(t.dimensions)} for k, t in self.tasks.items()},
            "dataset_types": self.dataset_types, "runs": list(runs),
        }
        return json.dumps(small, separators=(",", ":")).encode()[:-1]

    def _payload_v3(self) -> bytes:
        runs: dict[str, int] = {}
        datasets, order = columns.encode_datasets(self.datasets.values(), runs)
        position = dict(zip(order, range(len(order)), strict=True)).__getitem__
        quanta, quanta_order = columns.encode_quanta(self.quanta, position)
        records = columns.encode_records(self.records)
        # Records holding NaN or infinity go through json, which keeps them (orjson would write null).
        records_text = (_dumps(records) if columns.records_finite(records)
                        else json.dumps(records, separators=(",", ":")).encode())
        return b"".join([self._small(3, runs), b',"records":', records_text, b',"datasets":', _dumps(datasets),
                         b',"quanta":', _dumps(quanta), b',"order":', _dumps(quanta_order), b"}"])

    def _payload_v2(self) -> bytes:
        runs: dict[str, int] = {}
        index: dict[str, int] = {}
        by_type: dict[str, list[DatasetNode]] = {}
        for d in self.datasets.values():
            group = by_type.get(d.dataset_type)
            if group is None:
                group = by_type[d.dataset_type] = []
            group.append(d)
        datasets: dict[str, dict[str, Any]] = {}
        for name, group in by_type.items():  # file order = index order
            dims = list(group[0].data_id)
            rows = []
            for d in group:
                index[d.id] = len(index)
                run_index = runs.get(d.run)
                if run_index is None:
                    run_index = runs[d.run] = len(runs)
                rows.append([d.id, run_index, d.path, d.formatter, d.checksum, int(d.exists), d.size, d.mtime_ns,
                             *map(d.data_id.__getitem__, dims)])
            datasets[name] = {"dims": dims, "rows": rows}
        # Quanta refer to datasets by their position in the file (ints are far shorter than UUIDs).
        position = index.__getitem__
        quanta: dict[str, dict[str, Any]] = {}
        for q in self.quanta.values():
            block = quanta.get(q.task)
            if block is None:
                block = quanta[q.task] = {"dims": list(q.data_id), "rows": []}
            block["rows"].append([q.id, list(map(q.data_id.__getitem__, block["dims"])),
                                  {c: list(map(position, ids)) for c, ids in q.inputs.items()},
                                  {c: list(map(position, ids)) for c, ids in q.outputs.items()}, q.clobber])
        # The bulk (rows of str, int and None; records) goes through orjson, 6x faster than json's C encoder; the
        # rest through json. Records holding NaN or infinity go through json too: orjson would write them as null.
        records = (_dumps(self.records) if _all_finite(self.records)
                   else json.dumps(self.records, separators=(",", ":")).encode())
        return b"".join([self._small(2, runs), b',"records":', records, b',"datasets":', _dumps(datasets),
                         b',"quanta":', _dumps(quanta), b',"order":', _dumps(list(self.quanta)), b"}"])

    @classmethod
    def load(cls, path: str | Path) -> "QuantumGraph":
        with paused_gc():
            return cls._load(Path(path))

    @classmethod
    def _load(cls, path: Path) -> "QuantumGraph":
        """Any damage (truncated, empty, another gzip or JSON, a hand edit) is one GraphFormatError naming the file.

        Outputs that would be written outside their run's folder are refused here too, before a submit makes anything.
        """
        try:
            if path.is_file() and path.stat().st_size == 0:
                raise GraphFormatError(f"{path}: empty file (0 bytes), not a quantum graph")
            raw = igzip.decompress(path.read_bytes())
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError:  # NaN in records (json writes it, orjson does not read it), or damage
                doc = json.loads(raw)
        except FileNotFoundError:
            raise GraphFormatError(f"{path}: no such quantum graph file") from None
        except _UNREADABLE as exc:
            raise GraphFormatError(f"{path}: not a quantum graph file, or a truncated one ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise GraphFormatError(f"{path}: not an openastro-parsl quantum graph")
        if doc.get("version") not in READABLE:
            raise GraphFormatError(f"{path}: quantum graph format version {doc.get('version')}; this openastro-parsl "
                                   f"reads versions {', '.join(map(str, READABLE))} (re-plan with openastro-plan)")
        try:
            if doc["version"] == 1:
                _upgrade_v1(doc)
            graph = cls._from_columns(doc) if doc["version"] == 3 else cls._from_doc(doc)
            graph.check_output_paths()
        except DatastorePathError as exc:
            raise DatastorePathError(f"{path}: {exc}") from None
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            what = f"no {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
            raise GraphFormatError(f"{path}: damaged or foreign quantum graph ({what}); re-plan with openastro-plan") \
                from None
        return graph

    @classmethod
    def _from_columns(cls, doc: dict[str, Any]) -> "QuantumGraph":
        """A version 3 document."""
        datasets, ids = columns.decode_datasets(doc["datasets"], doc["runs"], DatasetNode)
        quanta = columns.decode_quanta(doc["quanta"], doc["order"], ids, Quantum)
        return cls._checked(doc, datasets, quanta, columns.decode_records(doc["records"]))

    @classmethod
    def _checked(cls, doc: dict[str, Any], datasets: dict[str, DatasetNode], quanta: dict[str, Quantum],
                 records: dict[str, dict[str, dict[str, Any]]]) -> "QuantumGraph":
        """The graph of a document's tasks and the decoded parts; every quantum's task must be one of them."""
        tasks = {k: TaskInfo(**{**v, "dimensions": tuple(v["dimensions"]),
                                "related_records": tuple(v.get("related_records", ()))}) for k, v in doc["tasks"].items()}
        for q in quanta.values():
            if q.task not in tasks:
                raise ValueError(f"quantum {q.id} of unknown task {q.task!r}")
        return cls(doc["header"], tasks, doc["dataset_types"], datasets, quanta, records)

    @classmethod
    def _from_doc(cls, doc: dict[str, Any]) -> "QuantumGraph":
        """A version 2 document (version 1 upgraded)."""
        runs = doc["runs"]
        datasets: dict[str, DatasetNode] = {}
        ids: list[str] = []
        for name, block in doc["datasets"].items():
            dims = block["dims"]
            n = len(dims)
            for row in block["rows"]:
                did = dict(zip(dims, row[8:8 + n], strict=True))
                datasets[row[0]] = DatasetNode(row[0], name, did, runs[row[1]], row[2], row[3], row[4], bool(row[5]),
                                               row[6], row[7])
                ids.append(row[0])
        quanta_by_id: dict[str, Quantum] = {}
        for label, block in doc["quanta"].items():
            dims = block["dims"]
            for qid, values, inputs, outputs, clobber in block["rows"]:
                quanta_by_id[qid] = Quantum(qid, label, dict(zip(dims, values, strict=True)),
                                            {c: [ids[i] for i in v] for c, v in inputs.items()},
                                            {c: [ids[i] for i in v] for c, v in outputs.items()}, clobber)
        quanta = {qid: quanta_by_id[qid] for qid in doc["order"]}
        return cls._checked(doc, datasets, quanta, doc.get("records", {}))

    def check_output_paths(self) -> None:
        """Every predicted output lies in its own run's folder, at one path of its own.

        A graph edited by hand (or planned for another repository layout) must not write over other runs' files or
        outside the repository. Inputs are not checked: directly ingested files may live anywhere.
        """
        run = check_relpath(self.output_run, "output run")
        if "." in run.split("/"):
            raise DatastorePathError(f"output run {run!r} has a '.' component")
        # Graphs planned before run names were checked folded odd characters to '_' (still inside the run).
        legacy = "/".join(re.sub(r"[^A-Za-z0-9._+=-]", "_", p) for p in run.split("/") if p)
        folders = (run_relpath(run) + "/", legacy + "/")
        allowed: dict[str, tuple[str, ...]] = {}
        seen: dict[str, str] = {}
        for q in self.quanta.values():
            for ids in q.outputs.values():
                for i in ids:
                    node = self.datasets[i]
                    path, dt = node.path, node.dataset_type
                    prefixes = allowed.get(dt) or allowed.setdefault(dt, tuple(f"{f}{dt}/" for f in folders))
                    if not isinstance(path, str) or not path.startswith(prefixes) or "/../" in path \
                            or path.endswith("/..") or "\0" in path:
                        raise DatastorePathError(
                            f"output {dt} {node.data_id} of task {q.task!r} has path {path!r}, outside its run's "
                            f"folder {folders[0]!r} in the repository; the graph was edited or is damaged (re-plan "
                            "with openastro-plan)")
                    if seen.setdefault(path, i) != i:
                        raise DatastorePathError(f"two outputs of the graph share the path {path!r}; the graph was "
                                                 "edited or is damaged (re-plan with openastro-plan)")

    def related_records(self, dimension: str, data_id: dict[str, Any]) -> list[dict[str, Any]]:
        """Records of ``dimension`` that agree with ``data_id`` on every dimension both carry (one at least).

        For a field's data ID: the targets in that field.
        """
        out = []
        for rec in self.records.get(dimension, {}).values():
            shared = [d for d in data_id if d in rec]
            if shared and all(rec[d] == data_id[d] for d in shared):
                out.append(rec)
        return out

    def record(self, dimension: str, data_id: dict[str, Any], universe_required: tuple[str, ...]) -> dict[str, Any] | None:
        key = ",".join(f"{d}={data_id[d]}" for d in universe_required)
        return self.records.get(dimension, {}).get(key)
