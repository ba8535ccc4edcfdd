"""How good a real/bogus classifier is: ROC AUC, FNR / FPR / precision / recall at thresholds, per bogus kind,
and the evaluation figure."""

from __future__ import annotations

import numpy as np

from .simulate import BOGUS_KINDS

__all__ = ["evaluate", "evaluation_figure", "format_metrics", "per_kind", "roc_auc", "roc_curve"]


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a random real > score of a random bogus), ties counted half
    (Mann-Whitney U from ranks)."""
    from scipy.stats import rankdata

    labels = np.asarray(labels).astype(bool)
    n1, n0 = int(labels.sum()), int((~labels).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, float))
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct score threshold, high to low."""
    labels = np.asarray(labels).astype(bool)
    order = np.argsort(-np.asarray(scores, float), kind="stable")
    tp = np.cumsum(labels[order])
    fp = np.cumsum(~labels[order])
    return np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)]


def evaluate(labels: np.ndarray, scores: np.ndarray, thresholds=(0.5, 0.8)) -> dict:
    """ROC AUC, and at each threshold FNR, FPR, precision, recall (and the counts behind them)."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, float)
    out = {"n": int(len(labels)), "n_real": int(labels.sum()), "n_bogus": int((labels == 0).sum()),
           "auc": roc_auc(labels, scores)}
    for t in thresholds:
        pred = scores >= t
        tp = int(np.sum(pred & (labels == 1)))
        fp = int(np.sum(pred & (labels == 0)))
        fn = int(np.sum(~pred & (labels == 1)))
        tn = int(np.sum(~pred & (labels == 0)))
        out[f"at_{t}"] = {"threshold": t, "fnr": fn / max(tp + fn, 1), "fpr": fp / max(fp + tn, 1),
                          "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1),
                          "tp": tp, "fp": fp, "fn": fn, "tn": tn}
    return out


def format_metrics(m: dict) -> str:
    lines = [f"held-out candidates: {m['n']} ({m['n_real']} real, {m['n_bogus']} bogus)",
             f"ROC AUC: {m['auc']:.4f}"]
    for k in sorted(k for k in m if k.startswith("at_")):
        v = m[k]
        lines.append(f"threshold {v['threshold']}: FNR {v['fnr']:.4f}  FPR {v['fpr']:.4f}  "
                     f"precision {v['precision']:.4f}  recall {v['recall']:.4f}")
    if "per_kind" in m:
        lines.append("per kind (fraction scored >= 0.5): " + ", ".join(
            f"{k} {v['frac_real']:.3f} (n={v['n']})" for k, v in m["per_kind"].items()))
    return "\n".join(lines)


def per_kind(kinds: np.ndarray, scores: np.ndarray, t: float = 0.5) -> dict:
    names = ("real",) + BOGUS_KINDS
    out = {}
    for code in np.unique(kinds):
        sel = kinds == code
        out[names[int(code)]] = {"n": int(sel.sum()), "frac_real": float(np.mean(scores[sel] >= t))}
    return out


def evaluation_figure(labels, scores):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 4))
    fpr, tpr = roc_curve(labels, scores)
    a.plot(fpr, tpr)
    a.set_xscale("log")
    a.set_xlim(1e-4, 1)
    a.set_xlabel("false positive rate")
    a.set_ylabel("true positive rate")
    a.set_title("ROC (held-out)")
    bins = np.linspace(0, 1, 41)
    b.hist(scores[labels == 1], bins, alpha=0.6, label="real", log=True)
    b.hist(scores[labels == 0], bins, alpha=0.6, label="bogus", log=True)
    b.axvline(0.5, color="k", lw=0.8)
    b.axvline(0.8, color="k", lw=0.8, ls="--")
    b.set_xlabel("real/bogus score")
    b.legend()
    fig.tight_layout()
    return fig
