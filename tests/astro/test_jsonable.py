"""astro.jsonable: numpy values -> JSON-native ones."""

from __future__ import annotations

import json
import math

import numpy as np

from openastro_parsl.astro.jsonable import finite_or_none, jsonable


def test_finite_or_none():
    assert finite_or_none(np.float32(1.5)) == 1.5 and type(finite_or_none(np.float32(1.5))) is float
    assert finite_or_none(None) is None and finite_or_none(np.nan) is None and finite_or_none(-np.inf) is None
    assert finite_or_none(3) == 3.0


def test_jsonable_nested():
    obj = {1: np.int64(3), "a": [np.float64(0.5), np.nan, (np.bool_(True), True)], "b": np.arange(3),
           "c": {"d": np.array([[1.0, np.inf]])}, "e": "text", "f": None, "g": np.str_("s")}
    out = jsonable(obj)
    assert out == {"1": 3, "a": [0.5, None, [True, True]], "b": [0, 1, 2], "c": {"d": [[1.0, None]]}, "e": "text",
                   "f": None, "g": "s"}
    assert type(out["1"]) is int and type(out["a"][2][0]) is bool and type(out["b"][0]) is int
    json.dumps(out, allow_nan=False)  # strict JSON
    kept = jsonable({"x": np.float32(np.nan)}, nonfinite="keep")
    assert math.isnan(kept["x"]) and type(kept["x"]) is float
