"""Statistics of logits: pure numpy / pandas, every number derived from the logits alone.

Per sample: max logit, logit gap (max minus second-largest), margin (true-class logit minus the
best other), softmax confidence, entropy, prediction, correctness. Between two models: rank
correlations of confidences, the samples with the largest confidence difference, and how well a
student keeps its teacher's order of the incorrect classes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

QUANTITIES = ("max_logit", "logit_gap", "margin", "confidence", "entropy")


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def per_sample(logits, labels) -> pd.DataFrame:
    """One row per sample: label, pred, correct and the QUANTITIES. logits (N, K), labels (N,)."""
    z = _np(logits).astype(np.float64)
    y = _np(labels).astype(np.int64)
    n = len(z)
    top2 = -np.partition(-z, 1, axis=1)[:, :2]
    true = z[np.arange(n), y]
    others = z.copy()
    others[np.arange(n), y] = -np.inf
    p = softmax(z)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    pred = z.argmax(axis=1)
    return pd.DataFrame({
        "label": y, "pred": pred, "correct": pred == y,
        "max_logit": top2[:, 0], "logit_gap": top2[:, 0] - top2[:, 1],
        "margin": true - others.max(axis=1), "confidence": p.max(axis=1), "entropy": entropy,
    })


def summarize(table: pd.DataFrame, columns=QUANTITIES) -> pd.DataFrame:
    """Mean, std, median and quantiles of each quantity (rows) plus accuracy."""
    cols = list(columns)
    q = table[cols].quantile([0.05, 0.25, 0.5, 0.75, 0.95]).T
    q.columns = ["q05", "q25", "median", "q75", "q95"]
    out = pd.concat([table[cols].mean().rename("mean"), table[cols].std(ddof=0).rename("std"), q], axis=1)
    return out


def accuracy(logits, labels) -> float:
    return float((_np(logits).argmax(axis=1) == _np(labels)).mean()) if len(_np(labels)) else float("nan")


def rank_correlation(a, b) -> dict[str, float]:
    """Spearman and Kendall (tau-b) rank correlation of two per-sample series."""
    a, b = _np(a), _np(b)
    return {"spearman": float(stats.spearmanr(a, b).statistic), "kendall": float(stats.kendalltau(a, b).statistic)}


def top_differences(conf_a, conf_b, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the k samples where A is most confident relative to B, and vice versa."""
    d = _np(conf_a) - _np(conf_b)
    order = np.argsort(-d, kind="stable")
    k = min(k, len(d))
    return order[:k], order[::-1][:k]


def incorrect_class_order_agreement(teacher_logits, student_logits, labels) -> np.ndarray:
    """Per-sample Kendall tau between teacher and student over the K-1 incorrect classes. (N,)

    1 means the student ranks the wrong classes exactly as its teacher does, -1 the reverse order.
    Ties count as neither agreeing nor disagreeing (tau-a).
    """
    t, s, y = _np(teacher_logits), _np(student_logits), _np(labels)
    n, k = t.shape
    keep = np.ones((n, k), dtype=bool)
    keep[np.arange(n), y] = False
    t, s = t[keep].reshape(n, k - 1), s[keep].reshape(n, k - 1)
    dt = np.sign(t[:, :, None] - t[:, None, :])
    ds = np.sign(s[:, :, None] - s[:, None, :])
    pairs = (k - 1) * (k - 2)  # ordered pairs; each unordered pair counted twice in the sum
    return (dt * ds).sum(axis=(1, 2)) / max(pairs, 1)


def ks_distance(a, b) -> float:
    """Kolmogorov-Smirnov statistic between two samples' distributions (0 = identical)."""
    return float(stats.ks_2samp(_np(a), _np(b)).statistic)
