"""The retraining pipeline's tasks (dimensions: instrument; ``pipelines/train_realbogus.yaml``): a labelled set
simulated under the instrument's conditions, training, held-out evaluation."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import numpy as np
from pydantic import Field

from ....pipeline.connections import Connections, Input, Output
from ....pipeline.task import PipelineTask, Resources, TaskConfig

# The science (the simulator, torch) is imported in each run: planning train_realbogus.yaml loads these classes.

__all__ = ["EvaluateConfig", "EvaluateConnections", "EvaluateTask", "TrainConfig", "TrainConnections", "TrainTask",
           "TrainingSetConfig", "TrainingSetConnections", "TrainingSetTask"]


class TrainingSetConfig(TaskConfig):
    seed: int = Field(1, description="Seed of the simulated training frames (deterministic).")
    n_frames: int = Field(300, ge=1, description="Simulated frames (each gives ~30 candidates).")
    heldout_seed: int = Field(2, description="Seed of the held-out frames (different sky, same conditions).")
    heldout_frames: int = Field(100, ge=1, description="Simulated frames of the held-out set.")
    from_calexps: bool = Field(True, description="Narrow the simulated conditions to this instrument's calexps "
                               "(pixel scale, seeing, depth, zero-points, size); False: the broad defaults.")


class TrainingSetConnections(Connections):
    calexps = Input("calexp", ("instrument", "exposure"), "Image", multiple=True,
                    doc="The instrument's calibrated frames: where the simulated conditions come from.")
    training = Output("rbTrainingSet", ("instrument",), "NumpyArrays",
                      doc="Labelled stamps: stamps, label, kind, snr, frame, split (0 train, 1 held-out).")


class TrainingSetTask(PipelineTask):
    """Labelled real/bogus stamps for one instrument, simulated under its observed conditions."""

    dimensions = ("instrument",)
    Config = TrainingSetConfig
    Connections = TrainingSetConnections
    resources = Resources(cores=1, memory_mb=4096, walltime_min=60, resource_class="slow")

    def run(self, calexps, data_id=None):
        from .dataset import build_training_set
        from .simulate import Conditions, conditions_from_calexps

        c = self.config
        cond = conditions_from_calexps(calexps) if c.from_calexps else Conditions()
        self.log.info("conditions: %s", json.dumps(asdict(cond)))
        tr = build_training_set(c.seed, c.n_frames, cond, log=self.log.info)
        ho = build_training_set(c.heldout_seed + 10_000, c.heldout_frames, cond, log=self.log.info)
        out = {k: np.concatenate([tr[k], ho[k]]) for k in tr}
        out["split"] = np.r_[np.zeros(len(tr["label"]), np.int8), np.ones(len(ho["label"]), np.int8)]
        out["conditions_json"] = np.asarray(json.dumps(asdict(cond)))
        self.log.info("%d training and %d held-out candidates (%.1f%% real)", len(tr["label"]), len(ho["label"]),
                      100 * out["label"].mean())
        return {"training": out}


class TrainConfig(TaskConfig):
    seed: int = Field(1, description="Torch seed (initial weights, batches, augmentation).")
    epochs: int = Field(12, ge=1, description="Passes over the training stamps.")
    batch_size: int = Field(128, ge=8, description="Stamps per optimisation step.")
    learning_rate: float = Field(2e-3, gt=0, description="Peak learning rate of the one-cycle schedule.")
    threads: int = Field(1, ge=1, description="torch CPU threads.")
    version: str = Field("trained", description="Version string stored with the weights.")


class TrainConnections(Connections):
    training = Input("rbTrainingSet", ("instrument",), "NumpyArrays")
    model = Output("rbModel", ("instrument",), "NumpyArrays",
                   doc="Weights (state-dict arrays) + meta_json; rbClassify's `weights` may point at its file.")


class TrainTask(PipelineTask):
    """Train the real/bogus CNN on the training split of an ``rbTrainingSet``."""

    dimensions = ("instrument",)
    Config = TrainConfig
    Connections = TrainConnections
    resources = Resources(cores=2, memory_mb=4096, walltime_min=60, resource_class="slow")

    def run(self, training, data_id=None):
        from .. import realbogus as rb
        from .train import train_model

        c = self.config
        sel = np.asarray(training["split"]) == 0
        if sel.sum() < 50 or len(np.unique(training["label"][sel])) < 2:
            raise ValueError(f"{dict(data_id or {})}: training split has {int(sel.sum())} stamps; need both classes")
        t0 = time.perf_counter()
        model, history = train_model({"stamps": training["stamps"][sel], "label": training["label"][sel]},
                                     seed=c.seed, epochs=c.epochs, batch_size=c.batch_size, lr=c.learning_rate,
                                     threads=c.threads, log=self.log.info)
        meta = rb.model_meta(model, version=c.version, seed=c.seed, training_seconds=time.perf_counter() - t0,
                             n_train=int(sel.sum()), history=history)
        return {"model": rb.model_to_arrays(model, meta)}


class EvaluateConfig(TaskConfig):
    threads: int = Field(1, ge=1, description="torch CPU threads.")
    batch_size: int = Field(512, ge=1, description="Stamps per inference batch.")


class EvaluateConnections(Connections):
    model = Input("rbModel", ("instrument",), "NumpyArrays")
    training = Input("rbTrainingSet", ("instrument",), "NumpyArrays")
    metrics = Output("rbEvaluation", ("instrument",), "StructuredData",
                     doc="auc; fnr, fpr, precision, recall at 0.5 and 0.8; per bogus kind.")
    plot = Output("rbEvaluationPlot", ("instrument",), "Plot", doc="ROC curve and score histograms.")


class EvaluateTask(PipelineTask):
    """Score the held-out split with the trained model: AUC, FNR/FPR, precision/recall at 0.5 and 0.8."""

    dimensions = ("instrument",)
    Config = EvaluateConfig
    Connections = EvaluateConnections
    resources = Resources(cores=1, memory_mb=2048, walltime_min=20)

    def run(self, model, training, data_id=None):
        import torch

        from .. import realbogus as rb
        from .metrics import evaluate, evaluation_figure, format_metrics, per_kind

        torch.set_num_threads(self.config.threads)
        net, meta = rb.model_from_arrays(model)
        sel = np.asarray(training["split"]) == 1
        if not sel.any():
            raise ValueError("rbTrainingSet has no held-out split")
        scores = rb.predict(net, np.asarray(training["stamps"][sel], np.float32), batch_size=self.config.batch_size)
        m = evaluate(training["label"][sel], scores)
        m["per_kind"] = per_kind(training["kind"][sel], scores)
        m["model"] = {k: meta.get(k) for k in ("version", "n_params", "seed", "training_seconds")}
        self.log.info("\n%s", format_metrics(m))
        return {"metrics": m, "plot": evaluation_figure(training["label"][sel], scores)}
