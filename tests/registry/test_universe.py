import pytest

from openastro_parsl.errors import DataIdError, UniverseError
from openastro_parsl.registry.universe import DimensionUniverse


def test_default_universe_relations():
    u = DimensionUniverse.default()
    assert set(u.names) == {"instrument", "band", "field", "exposure", "target"}
    assert u.required(["exposure"]) == ("instrument", "exposure")
    assert set(u.expanded(["exposure"])) == {"instrument", "exposure", "band", "field"}
    assert u.data_id_order(["exposure"]) == ("instrument", "exposure", "band", "field")
    assert u.where_types["exposure"]["day_obs"] is int and u.where_types["exposure"][None] is int


def test_normalize_coerces_and_rejects():
    u = DimensionUniverse.default()
    assert u.normalize(["exposure"], {"instrument": "lco1m", "exposure": "1042"}) == {"instrument": "lco1m", "exposure": 1042}
    with pytest.raises(DataIdError, match="lacks \\['instrument'\\]"):
        u.normalize(["exposure"], {"exposure": 1})
    with pytest.raises(DataIdError, match="outside its dimensions"):
        u.normalize(["exposure"], {"instrument": "x", "exposure": 1, "target": "t"})
    with pytest.raises(DataIdError, match="must be an integer"):
        u.normalize(["exposure"], {"instrument": "x", "exposure": "ten"})


def test_universe_is_extendable_without_code(tmp_path):
    text = DimensionUniverse.default().text + """
  night:
    doc: an observing night at one site
    key: {name: id, type: int}
    requires: [instrument]
"""
    u = DimensionUniverse(text)
    assert u.required(["night"]) == ("instrument", "night")


def test_cycle_is_refused():
    text = """
name: x
version: 1
dimensions:
  a: {implies: [b]}
  b: {implies: [c]}
  c: {requires: [a]}
"""
    with pytest.raises(UniverseError, match="cycle: .*a.*b.*c|cycle"):
        DimensionUniverse(text, "u.yaml")


def test_unknown_key_names_file_and_line():
    text = "name: x\nversion: 1\ndimensions:\n  a:\n    key: {name: id, type: int}\n    implys: [b]\n"
    with pytest.raises(UniverseError) as err:
        DimensionUniverse(text, "u.yaml")
    msg = str(err.value)
    assert "u.yaml:6" in msg and "implys" in msg and "unknown key" in msg


def test_unknown_reference_lists_known():
    with pytest.raises(UniverseError, match="unknown dimension 'nope'; known: a"):
        DimensionUniverse("name: x\nversion: 1\ndimensions:\n  a: {requires: [nope]}\n", "u.yaml")


def test_bad_yaml_reports_line():
    with pytest.raises(UniverseError, match="u.yaml: line 4, column 1: invalid YAML"):
        DimensionUniverse("name: x\nversion: 1\ndimensions: [\n", "u.yaml")
