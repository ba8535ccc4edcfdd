"""Where ttvFit takes the host's mass from (``ttv.stellar_mass_of``): config first, then the fitted planets' own
target records, then the field's transit host (the one whose name begins the planets' names), then the quantum's
own records, then the default; target records that disagree are refused, not picked from."""

from __future__ import annotations

import pytest

from openastro_parsl.tasks.lightcurve.ttv import TtvFitConfig, TtvFitTask, stellar_mass_of


def target(name, kind, mass=None, field="K2-24"):
    return {"name": name, "target": name, "kind": kind, "field": field, "stellar_mass": mass}


PLANETS = ["K2-24b", "K2-24c"]


def test_order_of_the_sources():
    cfg = TtvFitConfig()
    host = target("K2-24", "transit_host", 1.07)
    records = {"field": {"name": "K2-24"}, "target": [host, target("K2-24b", "planet"), target("K2-24c", "planet")]}
    assert stellar_mass_of(cfg, "K2-24", records, PLANETS) == (1.07, "target record K2-24 stellar_mass")
    assert stellar_mass_of(TtvFitConfig(stellar_masses={"K2-24": 0.9}), "K2-24", records, PLANETS) == (
        0.9, "config stellar_masses[K2-24]")
    own = dict(records, target=[host, target("K2-24b", "planet", 1.1), target("K2-24c", "planet", 1.1)])
    assert stellar_mass_of(cfg, "K2-24", own, PLANETS) == (1.1, "target record K2-24b, K2-24c stellar_mass")
    # another system's host in the same field is not this one's
    crowded = dict(records, target=records["target"] + [target("WASP-9", "transit_host", 1.3)])
    assert stellar_mass_of(cfg, "K2-24", crowded, PLANETS)[0] == 1.07
    # a lone planet is its own host; a target quantum's single record works too
    assert stellar_mass_of(cfg, "F1", {"target": [target("OA-T1", "transit_host", 0.8, "F1")]}, ["OA-T1"])[0] == 0.8
    assert stellar_mass_of(cfg, "F1", {"target": target("OA-T1", "transit_host", 0.8, "F1")}, ["OA-T1"])[0] == 0.8
    assert stellar_mass_of(cfg, "K2-24", {"field": {"stellar_mass": 0.7}}, PLANETS) == (
        0.7, "field record stellar_mass")
    assert stellar_mass_of(cfg, "K2-24", {"target": [target("K2-24", "transit_host")]}, PLANETS) == (
        1.0, "config stellar_mass_msun")


def test_records_that_disagree_are_refused():
    records = {"target": [target("K2-24b", "planet", 1.0), target("K2-24c", "planet", 1.2)]}
    with pytest.raises(ValueError, match=r"ttvFit field K2-24: target records give different stellar masses "
                                         r"\(K2-24b 1, K2-24c 1.2 Msun\); make them agree"):
        stellar_mass_of(TtvFitConfig(), "K2-24", records, PLANETS)
    two_hosts = {"target": [target("H1", "transit_host", 1.0), target("H2", "transit_host", 1.2)]}
    with pytest.raises(ValueError, match="set stellar_masses\\[K2-24\\]"):
        stellar_mass_of(TtvFitConfig(), "K2-24", two_hosts, PLANETS)


def test_the_task_asks_for_its_fields_target_records():
    assert TtvFitTask.related_records == ("target",) and TtvFitTask.dimensions == ("field",)
