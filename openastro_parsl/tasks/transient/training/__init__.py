"""Training the real/bogus classifier: a labelled set from the simulator, training, held-out evaluation.

Labels are only trustworthy when we made the sky: each simulated pair is a science frame and a deep template
of the same star field (heterogeneous pixel scales, rotations, seeing, depths, zero-points), into which
*real* point sources of varied flux are injected (in the science frame, a few in the template as fading
sources, some on top of stars) together with *bogus* features: cosmic rays, hot pixels, satellite trails,
dipoles from a science WCS that is slightly wrong, and bad subtractions (saturated stars, tracking smear,
PSF wings the kernel cannot match, template artefacts). Every pair then goes through the production
``diffim`` code, so the classifier learns from exactly the candidates and stamps the pipeline makes; a
candidate is real when it lies on an injected source of the same sign, bogus otherwise.

=================  =========================================================================================
``simulate``       ``Conditions``, ``simulate_pair``: a science frame and its template with injected truth
``dataset``        ``build_training_set``: pairs through the production diffim, candidates labelled
``train``          ``train_model``: the CNN of ``transient.realbogus`` trained on labelled stamps
``metrics``        ROC AUC, error rates at thresholds, per-kind scores, the evaluation figure
``tasks``          ``TrainingSetTask``, ``TrainTask``, ``EvaluateTask`` (``pipelines/train_realbogus.yaml``)
``truth``          demo-survey frames as a perfect calibration would make them (tests, benchmarks)
``make_weights``   the command line that makes the shipped weights
=================  =========================================================================================

Run as a module to (re)make the shipped weights:
``python -m openastro_parsl.tasks.transient.training --out openastro_parsl/tasks/transient/data/realbogus_v1.pt``.
"""

from typing import Any

from ...._lazy import lazy_exports

__all__ = ["BOGUS_KINDS", "KIND_CODE", "Conditions", "EvaluateConfig", "EvaluateConnections", "EvaluateTask",
           "SimPair", "TrainConfig", "TrainConnections", "TrainTask", "TrainingSetConfig", "TrainingSetConnections",
           "TrainingSetTask", "build_training_set", "conditions_from_calexps", "evaluate", "evaluation_figure",
           "format_metrics", "label_candidates", "main", "per_kind", "render_stars", "roc_auc", "roc_curve",
           "simulate_pair", "train_model", "truth_calexp", "truth_template"]
_get = lazy_exports(__name__, {
    "dataset": ("build_training_set", "label_candidates"),
    "make_weights": ("main",),
    "metrics": ("evaluate", "evaluation_figure", "format_metrics", "per_kind", "roc_auc", "roc_curve"),
    "simulate": ("BOGUS_KINDS", "KIND_CODE", "Conditions", "SimPair", "conditions_from_calexps", "render_stars",
                 "simulate_pair"),
    "tasks": ("EvaluateConfig", "EvaluateConnections", "EvaluateTask", "TrainConfig", "TrainConnections", "TrainTask",
              "TrainingSetConfig", "TrainingSetConnections", "TrainingSetTask"),
    "train": ("train_model",),
    "truth": ("truth_calexp", "truth_template"),
})


def __getattr__(name: str) -> Any:
    return _get(name)
