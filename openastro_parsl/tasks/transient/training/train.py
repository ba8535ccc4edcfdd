"""Training the real/bogus CNN: AdamW with a one-cycle learning rate, BCE loss, rotation/flip augmentation."""

from __future__ import annotations

import math
import time

import numpy as np

from .. import realbogus as rb
from .metrics import evaluate

__all__ = ["train_model"]


def _augment(x, gen):
    """Random 90-degree rotations and flips (the sky has no preferred orientation), same for a whole batch."""
    import torch

    k = int(torch.randint(0, 4, (1,), generator=gen))
    x = torch.rot90(x, k, dims=(2, 3))
    if int(torch.randint(0, 2, (1,), generator=gen)):
        x = torch.flip(x, dims=(3,))
    return x


def train_model(train: dict[str, np.ndarray], *, seed: int = 1, epochs: int = 12, batch_size: int = 128,
                lr: float = 2e-3, weight_decay: float = 1e-4, threads: int = 2, val_fraction: float = 0.1,
                log=print):
    """Train a fresh ``RealBogusNet``; returns (model, history). Adam + one-cycle LR, BCE loss, augmentation."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(max(1, threads))
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(np.asarray(train["stamps"], np.float32))
    y = torch.from_numpy(np.asarray(train["label"], np.float32))
    n = len(y)
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(val_fraction * n)
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    model = rb.RealBogusNet()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(tr_idx) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    pos_w = torch.tensor(float((y[tr_idx] == 0).sum()) / max(float((y[tr_idx] == 1).sum()), 1.0))
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_w)
    history = []
    t0 = time.perf_counter()
    for ep in range(epochs):
        model.train()
        order = torch.from_numpy(tr_idx[torch.randperm(len(tr_idx), generator=gen).numpy()])
        tot = 0.0
        for s in range(0, len(order), batch_size):
            b = order[s:s + batch_size]
            xb = _augment(x[b], gen)
            opt.zero_grad()
            loss = loss_fn(model(xb).squeeze(1), y[b])
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(b)
        entry = {"epoch": ep + 1, "train_loss": tot / len(order), "seconds": time.perf_counter() - t0}
        if n_val:
            p = rb.predict(model, x[val_idx].numpy(), batch_size=1024)
            m = evaluate(y[val_idx].numpy(), p)
            entry.update({"val_auc": m["auc"], "val_fnr": m["at_0.5"]["fnr"], "val_fpr": m["at_0.5"]["fpr"]})
        history.append(entry)
        if log:
            log(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in entry.items()))
    model.eval()
    return model, history
