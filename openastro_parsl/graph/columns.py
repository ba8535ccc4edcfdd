"""Quantum graph file version 3: datasets, quanta and records written as columns, not one row or dict per item.

Why: version 2 built a list per dataset and a list plus two dicts per quantum to save a graph (and as many to load
it), a quarter of the cost of planning. Here a block holds the datasets of one type (or the quanta of one task) and
each attribute is one list, or ``{"same": value}`` when every item shares it (the run, formatter, checksum, size and
mtime of predicted outputs; the instrument of every data ID). A connection is one flat list of dataset positions,
with per-quantum counts only when some quantum reads other than exactly one dataset through it (-1: no such
connection). The quanta come back in the blocks' order unless ``order`` lists their positions. ``QuantumGraph``
reads and writes the file; this module only turns its parts into columns and back.
"""

from __future__ import annotations

import math
from itertools import chain, groupby, islice, repeat
from operator import attrgetter
from typing import Any, Callable, Iterable

_SAME = "same"
_NODE_FIELDS = ("path", "formatter", "checksum", "exists", "size", "mtime_ns")  # DatasetNode's, after id, type, data ID, run


def column(values: list) -> list | dict[str, Any]:
    """The values, or ``{"same": v}`` when all are equal and of one type (``1``, ``1.0`` and ``True`` stay apart)."""
    if values and values.count(values[0]) == len(values) and len(set(map(type, values))) == 1:
        return {_SAME: values[0]}
    return values


def expand(col: Any, n: int, what: str) -> Iterable:
    """The ``n`` values of a column written by ``column``; a list of another length is damage."""
    if col.__class__ is list:
        if len(col) != n:
            raise ValueError(f"{what}: {len(col)} values for {n} items")
        return col
    return repeat(col[_SAME], n)


def _grouped(items: Iterable, key: Callable[[Any], str]) -> dict[str, list]:
    """Items by key, keys in first-seen order; a run of one key moves as one slice."""
    out: dict[str, list] = {}
    for k, run in groupby(items, key):
        group = out.get(k)
        if group is None:
            out[k] = list(run)
        else:
            group.extend(run)
    return out


def _value_columns(data_ids: list[dict], dims: list[str]) -> list:
    return [column([x[d] for x in data_ids]) for d in dims]


def _by_keys(items: list, data_ids: list[dict]) -> list[tuple[list[str], list, list]]:
    """(dimensions, items, value columns), one part per set of data ID keys: one part in the usual case.

    Every data ID has every key of the first and they hold as many keys in all: they all have the same keys.
    """
    dims = list(data_ids[0])
    if sum(map(len, data_ids)) == len(dims) * len(data_ids):
        try:
            return [(dims, items, _value_columns(data_ids, dims))]
        except KeyError:
            pass
    parts: dict[tuple, tuple[list, list]] = {}
    for item, did in zip(items, data_ids, strict=True):
        its, dids = parts.setdefault(tuple(did), ([], []))
        its.append(item)
        dids.append(did)
    return [(list(k), its, _value_columns(dids, list(k))) for k, (its, dids) in parts.items()]


def data_ids_of(dims: list[str], cols: list, n: int, what: str) -> list[dict]:
    """The ``n`` data IDs of a block's value columns."""
    if len(cols) != len(dims):
        raise ValueError(f"{what}: {len(cols)} value columns for dimensions {dims}")
    if not dims:
        return [{} for _ in range(n)]
    return [dict(zip(dims, v, strict=True)) for v in zip(*[expand(c, n, what) for c in cols], strict=True)]


def _positions(at: Any, size: int, what: str) -> list[int]:
    """Indices into a list of ``size`` (datasets of the file, runs), checked: Python would take -1 as the last."""
    if at.__class__ is not list or (at and (min(at) < 0 or max(at) >= size)):
        raise ValueError(f"{what}: indices outside the {size} items they point into")
    return at


# -- datasets -------------------------------------------------------------------------------------
def encode_datasets(nodes: Iterable, runs: dict[str, int]) -> tuple[list[dict[str, Any]], list[str]]:
    """Blocks of datasets, one per dataset type (and set of data ID keys), and their ids in file order.

    ``runs`` (run name -> index) is completed with the runs met.
    """
    blocks: list[dict[str, Any]] = []
    order: list[str] = []
    for name, group in _grouped(nodes, attrgetter("dataset_type")).items():
        for dims, part, values in _by_keys(group, [d.data_id for d in group]):
            ids = [d.id for d in part]
            order.extend(ids)
            names = [d.run for d in part]
            run: Any = ({_SAME: runs.setdefault(names[0], len(runs))} if names.count(names[0]) == len(names)
                        else [runs.setdefault(r, len(runs)) for r in names])
            blocks.append({
                "type": name, "n": len(part), "dims": dims, "id": ids, "run": run,
                "path": [d.path for d in part], "formatter": column([d.formatter for d in part]),
                "checksum": column([d.checksum for d in part]), "exists": column([bool(d.exists) for d in part]),
                "size": column([d.size for d in part]), "mtime_ns": column([d.mtime_ns for d in part]),
                "values": values})
    return blocks, order


def decode_datasets(blocks: list[dict[str, Any]], runs: list[str], node: Callable[..., Any]) -> tuple[dict, list[str]]:
    """Datasets by id (``node`` makes one from id, type, data ID, run and ``_NODE_FIELDS``) and the ids in file order."""
    datasets: dict[str, Any] = {}
    order: list[str] = []
    for b in blocks:
        n, name, ids = b["n"], b["type"], b["id"]
        what = f"datasets of type {name!r}"
        if ids.__class__ is not list or len(ids) != n:
            raise ValueError(f"{what}: {len(ids)} ids for {n} datasets")
        run = b["run"]
        _positions(run if run.__class__ is list else [run[_SAME]], len(runs), f"{what}: runs")
        cols = [expand(b[f], n, what) for f in _NODE_FIELDS]
        cols[3] = map(bool, cols[3])
        datasets.update(zip(ids, map(node, ids, repeat(name), data_ids_of(b["dims"], b["values"], n, what),
                                     map(runs.__getitem__, expand(run, n, what)), *cols), strict=True))
        order.extend(ids)
    return datasets, order


# -- quanta ---------------------------------------------------------------------------------------
def _encode_connections(maps: list[dict[str, list[str]]], position: Callable[[str], int]) -> dict[str, dict]:
    """One flat list of positions per connection (counts too unless each quantum reads exactly one dataset)."""
    names = list(dict.fromkeys(chain.from_iterable(maps)))
    n = len(maps)
    full = sum(map(len, maps)) == len(names) * n  # every quantum has every connection
    out = {}
    for c in names:
        if full:
            lists = [m[c] for m in maps]
            counts = list(map(len, lists))
        else:
            got = [m.get(c) for m in maps]
            counts = [-1 if x is None else len(x) for x in got]
            lists = [x for x in got if x is not None]
        enc: dict[str, list[int]] = {"at": list(map(position, chain.from_iterable(lists)))}
        if counts.count(1) != n:
            enc["n"] = counts
        out[c] = enc
    return out


def _decode_connections(encoded: dict[str, dict], n: int, ids: list[str], what: str) -> list[dict[str, list[str]]]:
    names = list(encoded)
    cols: list[list[list[str] | None]] = []
    absent = False
    for c, enc in encoded.items():
        at = _positions(enc["at"], len(ids), f"{what}, connection {c!r}")
        counts = enc.get("n")
        if counts is None:
            if len(at) != n:
                raise ValueError(f"{what}, connection {c!r}: {len(at)} datasets for {n} quanta")
            cols.append([[ids[i]] for i in at])
            continue
        if len(counts) != n or sum(k for k in counts if k > 0) != len(at):
            raise ValueError(f"{what}, connection {c!r}: counts do not match its {len(at)} datasets")
        found = map(ids.__getitem__, at)
        cols.append([list(islice(found, k)) if k >= 0 else None for k in counts])
        absent = absent or -1 in counts
    if not names:
        return [{} for _ in range(n)]
    if absent:
        return [{c: v for c, v in zip(names, row, strict=True) if v is not None} for row in zip(*cols, strict=True)]
    return [dict(zip(names, row, strict=True)) for row in zip(*cols, strict=True)]


def encode_quanta(quanta: dict[str, Any], position: Callable[[str], int]) -> tuple[list[dict[str, Any]], list[int] | None]:
    """Blocks of quanta, one per task (and set of data ID keys), and their order when it is not the blocks'."""
    blocks: list[dict[str, Any]] = []
    written: list[str] = []
    for label, group in _grouped(quanta.values(), attrgetter("task")).items():
        for dims, part, values in _by_keys(group, [q.data_id for q in group]):
            ids = [q.id for q in part]
            written.extend(ids)
            block = {"task": label, "n": len(part), "dims": dims, "id": ids, "values": values,
                     "inputs": _encode_connections([q.inputs for q in part], position),
                     "outputs": _encode_connections([q.outputs for q in part], position)}
            clobber = [[i, c] for i, c in enumerate(q.clobber for q in part) if c]
            if clobber:
                block["clobber"] = clobber
            blocks.append(block)
    if written == list(quanta):
        return blocks, None
    at = dict(zip(written, range(len(written)), strict=True))
    return blocks, [at[q] for q in quanta]


def decode_quanta(blocks: list[dict[str, Any]], order: list[int] | None, ids: list[str],
                  quantum: Callable[..., Any]) -> dict[str, Any]:
    """Quanta by id, in their saved order (``quantum`` makes one from id, task, data ID, inputs, outputs, clobber)."""
    quanta: dict[str, Any] = {}
    for b in blocks:
        n, label, qids = b["n"], b["task"], b["id"]
        what = f"quanta of task {label!r}"
        if qids.__class__ is not list or len(qids) != n:
            raise ValueError(f"{what}: {len(qids)} ids for {n} quanta")
        clobber: list[list[str]] = [[] for _ in range(n)]
        for i, c in b.get("clobber", ()):
            if not 0 <= i < n:
                raise ValueError(f"{what}: clobber list of quantum {i} of {n}")
            clobber[i] = list(c)
        quanta.update(zip(qids, map(quantum, qids, repeat(label), data_ids_of(b["dims"], b["values"], n, what),
                                    _decode_connections(b["inputs"], n, ids, what),
                                    _decode_connections(b["outputs"], n, ids, what), clobber), strict=True))
    if order is None:
        return quanta
    listed = list(quanta.values())
    if sorted(order) != list(range(len(listed))):
        raise ValueError(f"the quanta's order is not an order of the {len(listed)} quanta")
    return {q.id: q for q in map(listed.__getitem__, order)}


# -- records --------------------------------------------------------------------------------------
def encode_records(records: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per dimension: the keys, the field names and one column per field (a table of mixed fields as it is)."""
    out: dict[str, dict[str, Any]] = {}
    for dim, table in records.items():
        recs = list(table.values())
        fields = list(recs[0]) if recs else []
        if sum(map(len, recs)) == len(fields) * len(recs):
            try:
                out[dim] = {"keys": list(table), "fields": fields,
                            "columns": [column([r[f] for r in recs]) for f in fields]}
                continue
            except KeyError:
                pass
        out[dim] = {"rows": table}
    return out


def decode_records(encoded: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Records by dimension and data ID key, each a dict of its fields again."""
    out = {}
    for dim, t in encoded.items():
        if "rows" in t:
            out[dim] = t["rows"]
            continue
        keys, fields = t["keys"], t["fields"]
        recs = data_ids_of(fields, t["columns"], len(keys), f"records of {dim!r}")
        out[dim] = dict(zip(keys, recs, strict=True))
    return out


def _finite(values: Iterable) -> bool:
    """No float among the values is NaN or infinite."""
    values = list(values)
    if float not in set(map(type, values)):
        return True
    return all(math.isfinite(v) for v in values if v.__class__ is float)


def records_finite(encoded: dict[str, dict[str, Any]]) -> bool:
    """No float in the encoded records is NaN or infinite (orjson would write those as null)."""
    for t in encoded.values():
        if "rows" in t:
            if not all(_finite(rec.values()) for rec in t["rows"].values()):
                return False
            continue
        for col in t["columns"]:
            if not _finite(col if col.__class__ is list else [col[_SAME]]):
                return False
    return True
