"""Real/bogus classification of difference-image candidates with a small CNN (torch).

Most 5-sigma detections in a difference image are not astrophysical: cosmic rays, hot pixels, satellite
trails, dipoles where the images were misaligned, residuals of stars the kernel could not match. A small
convolutional network looking at the science, reference and difference stamps together separates them from
real point sources (Duev et al. 2019, ZTF's braai, is the model for this). Stamps are scaled by the
difference-image noise at the candidate and compressed with asinh, so a score depends on shape and
significance rather than on a frame's units.

Weights ship with the package (``data/realbogus_v1.pt`` + ``.json``: version, seed, metrics, sha256) and
load from disk only; ``pipelines/train_realbogus.yaml`` retrains them (``rbModel`` datasets load the same way).
Inference is batched, on the CPU by default or on a GPU when one is present (``device: auto``).
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
from pydantic import Field

from ...pipeline.connections import Connections, Input, Output
from ...pipeline.task import PipelineTask, Resources, TaskConfig

__all__ = ["STAMP_SIZE", "DEFAULT_WEIGHTS", "HELDOUT_SEED", "RealBogusNet", "prepare_stamps", "predict",
           "load_weights", "save_weights", "model_meta", "model_to_arrays", "model_from_arrays", "RealBogusTask"]

STAMP_SIZE = 31
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "data" / "realbogus_v1.pt"
HELDOUT_SEED = 20260302  # the held-out frames of the shipped weights' evaluation (never trained on)
CHANNELS = ("science", "reference", "difference")


def _nn():
    import torch.nn as nn

    return nn


def RealBogusNet(width: int = 16, stamp_size: int = STAMP_SIZE, dropout: float = 0.25):
    """Three conv blocks (3x3 convolutions, batch norm, max-pool) and a small dense head; ~75k parameters."""
    import torch

    nn = _nn()

    class _Net(nn.Module):
        def __init__(self):
            super().__init__()
            w = width

            def block(cin, cout):
                return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                     nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                     nn.MaxPool2d(2))

            self.features = nn.Sequential(block(len(CHANNELS), w), block(w, 2 * w), block(2 * w, 4 * w))
            side = stamp_size // 8
            self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * w * side * side, 64),
                                      nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(64, 1))
            self.arch = {"width": width, "stamp_size": stamp_size, "dropout": dropout}

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(x))

    return _Net()


def prepare_stamps(cutouts: dict, size: int = STAMP_SIZE) -> np.ndarray:
    """Model input (N, 3, size, size) float32 from ``diaCutouts``: each stamp / the difference noise at the
    candidate, then asinh (keeps faint shapes linear, squeezes bright stars). Larger stamps are centre-cropped,
    smaller ones zero-padded."""
    diff = np.asarray(cutouts["difference"], np.float32)
    n = diff.shape[0]
    if n == 0:
        return np.zeros((0, len(CHANNELS), size, size), np.float32)
    s = diff.shape[-1]
    sig = np.asarray(cutouts["sigma"], np.float32)
    c = s // 2
    core = sig[:, max(c - 2, 0):c + 3, max(c - 2, 0):c + 3].reshape(n, -1)
    scale = np.array([np.median(r[r > 0]) if (r > 0).any() else np.nan for r in core], np.float32)
    fallback = np.array([np.median(r[r > 0]) if (r > 0).any() else 1.0 for r in sig.reshape(n, -1)], np.float32)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, fallback)
    planes = np.stack([np.asarray(cutouts[k], np.float32) for k in CHANNELS], axis=1)
    planes = np.nan_to_num(planes, nan=0.0, posinf=0.0, neginf=0.0)
    x = np.arcsinh(planes / scale[:, None, None, None]).astype(np.float32)
    if s > size:
        o = (s - size) // 2
        x = x[:, :, o:o + size, o:o + size]
    elif s < size:
        o = (size - s) // 2
        x = np.pad(x, ((0, 0), (0, 0), (o, size - s - o), (o, size - s - o)))
    return np.ascontiguousarray(x)


def choose_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but torch sees no CUDA GPU")
    return device


def predict(model, stamps: np.ndarray, *, batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    """Real-bogus scores in [0, 1] (sigmoid of the logit), batched, without gradients."""
    import torch

    model.eval()
    model.to(device)
    out = []
    with torch.no_grad():
        for s in range(0, len(stamps), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(stamps[s:s + batch_size], dtype=np.float32)).to(device)
            out.append(torch.sigmoid(model(xb)).squeeze(1).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


# --------------------------------------------------------------------------------------------------------------
# Weights on disk: .pt (state dict) + .json (meta) shipped; NPZ arrays for the rbModel dataset
# --------------------------------------------------------------------------------------------------------------

def n_params(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def model_meta(model, *, version: str, seed: int, training_seconds: float, n_train: int, history=None) -> dict:
    return {"version": str(version), "seed": int(seed), "architecture": dict(model.arch), "channels": list(CHANNELS),
            "normalisation": "asinh(stamp / difference sigma at the candidate)", "n_params": n_params(model),
            "training_seconds": float(training_seconds), "n_train": int(n_train), "history": history or []}


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_weights(model, path: Path, meta: dict) -> dict:
    """Write the state dict to ``path`` (.pt) and meta + its sha256 to ``path`` with .json."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    meta = dict(meta, sha256=_sha256(path), file=path.name, size_bytes=path.stat().st_size)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return meta


def model_to_arrays(model, meta: dict) -> dict[str, np.ndarray]:
    """State dict as named arrays plus ``meta_json`` (the ``rbModel`` NumpyArrays dataset)."""
    out = {f"w:{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    out["meta_json"] = np.asarray(json.dumps(meta))
    return out


def model_from_arrays(arrays) -> tuple[object, dict]:
    import torch

    meta = json.loads(str(np.asarray(arrays["meta_json"])))
    model = RealBogusNet(**meta["architecture"])
    state = {k[2:]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith("w:")}
    model.load_state_dict(state)
    model.eval()
    return model, meta


def load_weights(path: str | Path | None = None, *, verify: bool = True) -> tuple[object, dict]:
    """(model, meta) from a shipped ``.pt`` (+ ``.json``) or an ``rbModel`` ``.npz``; never touches the network."""
    import torch

    path = Path(path) if path else DEFAULT_WEIGHTS
    if not path.exists():
        raise FileNotFoundError(f"real/bogus weights {path} do not exist")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return model_from_arrays({k: z[k] for k in z.files})
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text()) if side.exists() else {"architecture": {}}
    if verify and meta.get("sha256") and meta["sha256"] != _sha256(path):
        raise ValueError(f"{path}: sha256 does not match {side.name} (corrupt or replaced weights)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = RealBogusNet(**meta.get("architecture", {}))
    model.load_state_dict(state)
    model.eval()
    return model, meta


_CACHE: dict[tuple[str, str], tuple[object, dict]] = {}
_LOCK = threading.Lock()


def cached_model(path: str | Path | None, device: str):
    """One loaded model per (weights file, device) per process: a worker scores many exposures."""
    key = (str(Path(path).resolve()) if path else str(DEFAULT_WEIGHTS), device)
    with _LOCK:
        if key not in _CACHE:
            model, meta = load_weights(path)
            model.to(device)
            _CACHE[key] = (model, meta)
        return _CACHE[key]


# --------------------------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------------------------

class RealBogusConfig(TaskConfig):
    weights: str | None = Field(None, description="Weights file: a .pt (+ .json) or an rbModel .npz; default the "
                                "shipped data/realbogus_v1.pt.")
    device: str = Field("auto", description="auto (GPU when torch sees one, else CPU), cpu, or cuda[:N].")
    batch_size: int = Field(512, ge=1, description="Stamps per inference batch.")
    threads: int = Field(1, ge=1, description="torch CPU threads (intra-op).")


class RealBogusConnections(Connections):
    sources = Input("diaSrc", ("instrument", "exposure"), "Table", doc="Difference-image candidates.")
    cutouts = Input("diaCutouts", ("instrument", "exposure"), "NumpyArrays", doc="Their stamps.")
    scored = Output("diaSrcScored", ("instrument", "exposure"), "Table", doc="diaSrc with rb_score.")


class RealBogusTask(PipelineTask):
    """Score every candidate of an exposure with the CNN; adds ``rb_score`` (1 = real) to the table."""

    dimensions = ("instrument", "exposure")
    Config = RealBogusConfig
    Connections = RealBogusConnections
    resources = Resources(cores=1, memory_mb=1024, walltime_min=10)

    def run(self, sources, cutouts, data_id=None):
        import torch
        from astropy.table import Table

        where = ", ".join(f"{k}={v}" for k, v in dict(data_id).items()) if data_id else "diaSrc"
        c = self.config
        table = Table(sources, copy=True)
        n = len(table)
        ids = np.asarray(cutouts.get("id", np.arange(n)))
        if len(ids) != n or (n and "id" in table.colnames and not np.array_equal(ids, np.asarray(table["id"]))):
            raise ValueError(f"{where}: diaCutouts ({len(ids)} stamps) do not match diaSrc ({n} rows)")
        device = choose_device(c.device)
        torch.set_num_threads(c.threads)
        model, meta = cached_model(c.weights, device)
        size = int(meta.get("architecture", {}).get("stamp_size", STAMP_SIZE))
        scores = predict(model, prepare_stamps(cutouts, size), batch_size=c.batch_size, device=device) if n else \
            np.zeros(0, np.float32)
        table["rb_score"] = scores.astype(np.float64)
        table.meta["rb_weights"] = str(c.weights or DEFAULT_WEIGHTS.name)
        table.meta["rb_version"] = str(meta.get("version", "?"))
        table.meta["rb_device"] = device
        self.log.info("%s: %d candidates scored on %s (model v%s), %d >= 0.5", where, n, device,
                      meta.get("version", "?"), int(np.sum(scores >= 0.5)))
        return {"scored": table}
