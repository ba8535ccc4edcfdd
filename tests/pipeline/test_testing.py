"""openastro_parsl.testing.run_task: a task's run() on in-memory inputs, checked against its connections."""

import numpy as np
import pytest
from astropy.io import fits

from openastro_parsl.datastore.image import Image
from openastro_parsl.pipeline import Connections, Input, NoWorkFound, Output, PipelineError, PipelineTask
from openastro_parsl.pipeline.task import import_task
from openastro_parsl.testing import run_task
from openastro_parsl.testing.toy_tasks import FaultyStatsTask, StatsEchoTask

# Through import_task: the dotted path every pipeline file uses, wherever the module now lives.
FrameStatsTask = import_task("openastro_parsl.tasks.qa.FrameStatsTask")
FieldQaTask = import_task("openastro_parsl.tasks.qa.FieldQaTask")


def _frame(n_stars=6, seed=3) -> Image:
    rng = np.random.default_rng(seed)
    data = rng.normal(1000.0, 10.0, (96, 96))
    yy, xx = np.mgrid[:96, :96]
    for i in range(n_stars):
        x0, y0 = 12 + 14 * i, 20 + 9 * i
        data += 4000.0 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 1.5 ** 2))
    return Image(data, fits.Header())


def test_a_shipped_task_runs_as_on_a_worker():
    frame = _frame()
    out = run_task(FrameStatsTask, config={"detect_sigma": 5}, raw=frame)
    assert set(out) == {"stats"}
    assert out["stats"]["n_sources"] == 6 and abs(out["stats"]["background"] - 1000) < 5
    assert out == FrameStatsTask(FrameStatsTask.Config(detect_sigma=5)).run(raw=frame)
    assert run_task("openastro_parsl.tasks.qa.FrameStatsTask", raw=frame) == out  # by dotted path too


def test_a_gathering_task_gets_its_data_ids():
    stats = [{"background": 1.0, "noise": n, "n_sources": 3, "has_wcs": True} for n in (1.0, 1.1, 9.0)]
    ids = [{"instrument": "lco1m", "exposure": e} for e in (1, 2, 3)]
    table = run_task(FieldQaTask, config={"max_noise_ratio": 2}, stats=stats, data_ids={"stats": ids})["summary"]
    assert list(table["exposure"]) == [1, 2, 3] and list(table["flagged"]) == [False, False, True]


def test_a_toy_task_and_no_work():
    assert run_task(StatsEchoTask, stats={"noise": 2.5}) == {"echo": {"noise": 2.5}}
    with pytest.raises(NoWorkFound, match="nothing to measure on exposure 7"):
        run_task(FaultyStatsTask, config={"fail_exposures": [7], "fault": "no_work", "marker": __file__},
                 data_id={"instrument": "x", "exposure": 7}, raw=_frame())


def test_inputs_must_match_the_connections():
    stats = {"noise": 1.0}
    with pytest.raises(PipelineError, match=r"StatsEchoTask: inputs do not match its connections: missing \['stats'\]"):
        run_task(StatsEchoTask)
    with pytest.raises(PipelineError, match=r"no connection named \['stat'\] \(inputs: stats\)"):
        run_task(StatsEchoTask, stats=stats, stat=stats)
    with pytest.raises(PipelineError, match="input 'stats' is multiple=True: pass a list of datasets, not dict"):
        run_task(FieldQaTask, stats=stats)
    with pytest.raises(PipelineError, match="input 'raw' is a single RawImage: pass one dataset, not a list"):
        run_task(FrameStatsTask, raw=[_frame(), _frame()])
    with pytest.raises(PipelineError, match=r"data_ids\['stats'\] has 1 data ID\(s\) for 2 dataset\(s\)"):
        run_task(FieldQaTask, stats=[stats, stats], data_ids={"stats": [{"exposure": 1}]})
    with pytest.raises(PipelineError, match="data_id {'exposure': 7} lacks the task's dimension"):
        run_task(FaultyStatsTask, data_id={"exposure": 7}, raw=_frame())


class _Conns(Connections):
    items = Input("frameStats", ("instrument", "exposure"), "StructuredData", multiple=True, minimum=2)
    total = Output("statsTotal", ("instrument",), "StructuredData")


class CountTask(PipelineTask):
    """Asks for every extra the runner offers; returns what it was given."""

    dimensions = ("instrument",)
    Connections = _Conns

    def run(self, items, data_id, checkpoint_dir=None, records=None):
        return {"total": {"n": len(items), "data_id": data_id, "checkpoint_dir": checkpoint_dir,
                          "records": records}}


class WrongOutputTask(CountTask):
    def run(self, items):
        return {"totals": len(items)}


def test_extras_minimum_and_outputs(tmp_path):
    ckpt = tmp_path / "ckpt" / "deeper"
    out = run_task(CountTask, items=[{}, {}], data_id={"instrument": "a"}, checkpoint_dir=ckpt)["total"]
    assert out == {"n": 2, "data_id": {"instrument": "a"}, "checkpoint_dir": ckpt, "records": None}
    assert ckpt.is_dir()  # made for the task, as the runner does
    with pytest.raises(PipelineError, match="has 1 dataset.*fewer than minimum=2"):
        run_task(CountTask, items=[{}], data_id={"instrument": "a"})
    with pytest.raises(TypeError, match="data_id"):  # run needs it and the test gave none
        run_task(CountTask, items=[{}, {}])
    with pytest.raises(RuntimeError, match=r"WrongOutputTask.run returned outputs \['totals'\]; its connections "
                                           r"declare \['total'\]"):
        run_task(WrongOutputTask, items=[{}, {}])
