"""Gathering in live mode: when a task re-runs, over which data IDs, and the versions' RUN collections."""

from __future__ import annotations

import pytest

from openastro_parsl.live.gather import (
    GatherConfigError,
    GatherSchedule,
    next_version,
    parse_rules,
    selection_where,
    version_run,
)
from openastro_parsl.registry.where import evaluate_where, parse_where


def _schedule(gather):
    rules = parse_rules(gather, ["coadd", "makeLightcurve"])
    consumes = {"normExp": ["coadd"], "src": ["makeLightcurve"]}
    dims = {"coadd": ("field", "band"), "makeLightcurve": ("target", "field", "band")}
    return GatherSchedule(rules, consumes, dims, now=0.0)


def _frame(exposure, field="demo1", band="r"):
    return {"instrument": "slt40", "exposure": exposure, "band": band, "field": field}


def test_after_n_new_inputs_counted_by_data_id():
    s = _schedule({"coadd": {"after": 3, "every_s": None}})
    s.note([("normExp", "a", _frame(1)), ("normExp", "b", _frame(2)), ("src", "c", _frame(1))])
    s.note([("normExp", "a2", _frame(2))])  # the same frame again is not a new input
    assert s.due(now=1.0) == []
    s.note([("normExp", "d", _frame(3, field="demo2"))])
    assert s.due(now=1.0) == ["coadd"]
    selections = s.take("coadd", now=2.0)
    assert sorted(map(tuple, (sel.values() for sel in selections))) == [("demo1", "r"), ("demo2", "r")]
    assert s.due(now=3.0) == []  # counters start again


def test_schedule_needs_a_new_input_and_caps_versions():
    s = _schedule({"makeLightcurve": {"after": None, "every_s": 60, "max_versions": 1}})
    assert s.due(now=1000.0) == []  # no new input: nothing to re-run
    s.note([("src", "x", _frame(7))])
    assert s.due(now=59.0) == [] and s.due(now=60.0) == ["makeLightcurve"]
    s.take("makeLightcurve", now=60.0)
    s.note([("src", "y", _frame(8))])
    assert s.due(now=10_000.0) == []  # max_versions reached


def test_rules_are_checked():
    with pytest.raises(GatherConfigError, match="'coad' is not a gathering task"):
        parse_rules({"coad": {"after": 2}}, ["coadd"])
    with pytest.raises(GatherConfigError, match="task 'coadd': after"):
        parse_rules({"coadd": {"after": 0}}, ["coadd"])
    with pytest.raises(GatherConfigError, match="give after, every_s or both"):
        parse_rules({"coadd": {"after": None, "every_s": None}}, ["coadd"])
    assert parse_rules(None, ["coadd"])["coadd"].after == 10


def test_selection_where_binds_values():
    where, binds = selection_where([{"field": "o'brien", "band": "r"}, {"field": "demo2", "band": "g"}])
    node = parse_where(where)
    assert "o'brien" not in where  # values travel as binds
    assert evaluate_where(node, lambda d, a: {"field": "o'brien", "band": "r"}[d], binds)
    assert not evaluate_where(node, lambda d, a: {"field": "demo2", "band": "r"}[d], binds)
    assert selection_where([{}]) == ("", {})


def test_versions_are_numbered_from_the_repository(butler):
    assert next_version(butler.registry, "night1", "coadd") == 1
    for n in (1, 2, 5):
        butler.registry.register_run(version_run("night1", "coadd", n))
    butler.registry.register_run("live/night1/coaddX/9")  # another task's versions do not count
    assert next_version(butler.registry, "night1", "coadd") == 6
