import os

import numpy as np
import pytest

from openastro_parsl.datastore.checksum import file_checksum
from openastro_parsl.datastore.datastore import Datastore, dataset_relpath
from openastro_parsl.errors import FormatterError, OpenAstroError
from openastro_parsl.registry.refs import DatasetType


def test_layout_is_by_run_type_and_data_id():
    rel = dataset_relpath("u/alice/run1", "calexp", ["instrument", "exposure"], {"instrument": "lco1m", "exposure": 1042}, ".fits")
    assert rel == "u/alice/run1/calexp/lco1m/calexp_lco1m_1042.fits"
    parts = dataset_relpath("../x", "t", ["field"], {"field": "../../etc"}, ".json").split("/")
    assert ".." not in parts and parts[-1].startswith("t_")


def test_write_is_atomic_and_checksummed(tmp_path):
    ds = Datastore(tmp_path)
    loc = ds.write({"a": 1}, dataset_type="meta", storage_class="StructuredData", key_dims=["field"],
                   data_id={"field": "demo1"}, run="r")
    assert loc["checksum"] == file_checksum(tmp_path / loc["path"])
    assert ds.read(loc["path"], loc["formatter"]) == {"a": 1}

    class Boom:
        pass

    with pytest.raises(FormatterError):
        ds.write({"bad": Boom()}, dataset_type="meta", storage_class="StructuredData", key_dims=["field"],
                 data_id={"field": "demo2"}, run="r")
    leftovers = [p for p in (tmp_path / "r" / "meta").rglob("*") if p.is_file()]
    assert [p.name for p in leftovers] == ["meta_demo1.json"]  # no temp file, no partial file


def test_butler_put_get_and_verify(populated):
    b = populated
    dt = DatasetType("stamp", ("instrument", "exposure"), "NumpyArrays")
    ref = b.put({"x": np.arange(10)}, dt, {"instrument": "lco1m", "exposure": 2}, run="u/t/run")
    np.testing.assert_array_equal(b.get("stamp", {"instrument": "lco1m", "exposure": 2}, collections="u/t/run")["x"], np.arange(10))
    with pytest.raises(OpenAstroError, match="already exists"):
        b.put({"x": np.arange(3)}, dt, {"instrument": "lco1m", "exposure": 2}, run="u/t/run")
    assert b.verify() == (1, [])
    path = b.path(ref)
    path.write_bytes(path.read_bytes() + b"x")
    checked, problems = b.verify()
    assert checked == 1 and "checksum mismatch" in problems[0]
    os.remove(path)
    assert "missing file" in b.verify()[1][0]
