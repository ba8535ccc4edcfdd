"""LiveEngine refuses a bad configuration or request before it starts anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from openastro_parsl.live.engine import LiveEngine, LiveError
from openastro_parsl.live.gather import GatherConfigError

PIPELINE = str(Path(__file__).resolve().parents[2] / "pipelines" / "openastro.yaml")


def test_tasks_split_into_per_frame_and_gathering(butler):
    engine = LiveEngine(butler.root, PIPELINE + "#transient", None, "cfg")
    assert [t.label for t in engine.frame_tasks] == ["plateSolve", "calibrate", "warp", "normalize", "diffim",
                                                     "rbClassify", "alerts"]  # isr is switched off
    assert set(engine.gather_tasks) == {"makeRefGrid", "templateCoadd", "linkMovers"}
    assert sorted(engine.leaf_tasks) == ["alerts", "normalize"]


def test_bad_configuration_is_refused(butler):
    with pytest.raises(GatherConfigError, match="'coadd' is not a gathering task"):
        LiveEngine(butler.root, PIPELINE + "#transient", None, "cfg", gather={"coadd": {"after": 2}})
    with pytest.raises(LiveError, match="no task of the pipeline runs per exposure"):
        LiveEngine(butler.root, PIPELINE + "#coadd", None, "cfg")


def test_submit_needs_exposure_data_ids(butler):
    engine = LiveEngine(butler.root, PIPELINE + "#transient", None, "cfg")
    with pytest.raises(LiveError, match="lacks exposure"):
        engine.submit([{"instrument": "slt40"}])
    assert engine.submit([]) == {}
