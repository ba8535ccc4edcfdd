"""Transient branch: what changed since the template, whether it is real, and which changes are news.

``templateCoadd`` (``tasks.image``) -> ``diffim`` -> ``rbClassify`` -> ``alerts``.

==============  ===========================================================================================
``diffim``      difference imaging by stage: alignment, background, PSF, Alard-Lupton kernel, subtraction,
                detection (``DiffimTask``)
``realbogus``   the real/bogus CNN (torch), its shipped weights (``data/``) and ``RealBogusTask``
``alerts``      ``AlertsTask``: confident, unknown, unflagged candidates become alerts with stamps
``brightstars`` the halos, spikes and ghosts of bright catalogue stars, which alerts veto
``training``    retraining the CNN on simulated pairs (``pipelines/train_realbogus.yaml``); import it as
                ``tasks.transient.training``
==============  ===========================================================================================
"""

from typing import Any

from ..._lazy import lazy_exports

__all__ = ["AlertsConfig", "AlertsConnections", "AlertsTask", "DiffimConfig", "DiffimConnections", "DiffimTask",
           "KnownSource", "RealBogusConfig", "RealBogusConnections", "RealBogusTask", "difference_image",
           "load_weights", "predict", "prepare_stamps", "select_alerts"]
_get = lazy_exports(__name__, {
    "alerts": ("AlertsConfig", "AlertsConnections", "AlertsTask", "KnownSource", "select_alerts"),
    "diffim": ("DiffimConfig", "DiffimConnections", "DiffimTask", "difference_image"),
    "realbogus": ("RealBogusConfig", "RealBogusConnections", "RealBogusTask", "load_weights", "predict",
        "prepare_stamps"),
})


def __getattr__(name: str) -> Any:
    return _get(name)
