"""Statistics of logits: pure numpy / pandas, every number derived from the logits alone.

No scipy at import or in the pages' statistics: importing scipy.stats costs about half a second of
the app's first page (`python -m bench --only warm_start_seconds`), so the rank correlations and the
KS distance are written here and checked against scipy in the tests.

Per sample: max logit, logit gap (max minus second-largest), margin (true-class logit minus the
best other), softmax confidence, entropy, prediction, correctness. Between two models: rank
correlations of confidences, the samples with the largest confidence difference, and how well a
student keeps its teacher's order of the incorrect classes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

QUANTITY_LABELS = {  # the per-sample quantities, in the order tables and pages list them, with their names
    "max_logit": "max logit", "logit_gap": "logit gap (max - second)", "margin": "margin (true - best other)",
    "confidence": "confidence (max softmax)", "entropy": "entropy of the softmax",
}
QUANTITIES = tuple(QUANTITY_LABELS)


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
    """Spearman and Kendall (tau-b) rank correlation of two per-sample series (NaN if either is constant)."""
    a, b = _np(a).astype(np.float64).ravel(), _np(b).astype(np.float64).ravel()
    if len(a) != len(b):
        raise ValueError(f"rank_correlation needs two series of the same length, got {len(a)} and {len(b)}")
    return {"spearman": _pearson(_average_ranks(a), _average_ranks(b)), "kendall": _kendall_tau_b(a, b)}


def _average_ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing the mean of their ranks (what Spearman's rho correlates)."""
    return pd.Series(v).rank(method="average").to_numpy()


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def _tied_pairs(*keys: np.ndarray) -> int:
    """Pairs of samples equal in every key."""
    _, counts = np.unique(np.stack(keys, axis=1), axis=0, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def _inversions(v: np.ndarray) -> int:
    """Pairs i < j with v[i] > v[j]: a bottom-up merge sort, one vectorised pass per level. O(n log^2 n)."""
    v = np.unique(v, return_inverse=True)[1].astype(np.int64).ravel()  # dense ranks 0..m-1
    n, count, width = len(v), 0, 1
    while width < n:
        block = np.arange(n) // (2 * width)      # the pair of runs each element belongs to
        right = (np.arange(n) // width) % 2 == 1  # in the second run of its pair
        span = v.max() + 1
        # Each run is already sorted; offset by block so one searchsorted serves every pair at once.
        left_keys = (v + block * span)[~right]
        right_keys = (v + block * span)[right]
        run_end = np.searchsorted(left_keys, block[right] * span + span)  # end of the left run of each pair
        count += int((run_end - np.searchsorted(left_keys, right_keys, side="right")).sum())
        v = np.sort(v + block * span) - block * span  # merge: sort within each pair of runs
        width *= 2
    return count


def _kendall_tau_b(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b (Knight's algorithm): concordant minus discordant pairs, corrected for ties."""
    n = len(a)
    order = np.lexsort((b, a))  # by a, ties in a by b: tied-a pairs then never count as discordant
    pairs = n * (n - 1) // 2
    tied_a, tied_b, tied_ab = _tied_pairs(a), _tied_pairs(b), _tied_pairs(a, b)
    discordant = _inversions(b[order])
    denom = np.sqrt(float(pairs - tied_a) * float(pairs - tied_b))
    if denom == 0:
        return float("nan")
    return float((pairs - tied_a - tied_b + tied_ab - 2 * discordant) / denom)


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
    """Kolmogorov-Smirnov statistic between two samples' distributions: the largest gap between their
    empirical CDFs (0 = identical, 1 = no overlap)."""
    a, b = np.sort(_np(a).ravel()), np.sort(_np(b).ravel())
    if not len(a) or not len(b):
        return float("nan")
    points = np.concatenate([a, b])
    gap = np.searchsorted(a, points, side="right") / len(a) - np.searchsorted(b, points, side="right") / len(b)
    return float(np.abs(gap).max())


def grouped_values(values: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
    """(model, group, values) for every non-empty pair, models in order, groups in their categories' order
    when `group` is categorical (class 0, 1, ...; correct before incorrect), else in order of appearance."""
    model, group = values["model"], values["group"]
    models = list(model.cat.categories) if hasattr(model, "cat") else list(dict.fromkeys(model))
    mi = pd.Categorical(model, categories=models).codes.astype(np.int64)
    if hasattr(group, "cat"):
        gi, groups = group.cat.codes.to_numpy().astype(np.int64), list(group.cat.categories)
    else:
        gi, groups = pd.factorize(group)
    key = gi * len(models) + mi
    order = np.argsort(key, kind="stable")
    v, k = values["value"].to_numpy(dtype=np.float64)[order], key[order]
    bounds = np.searchsorted(k, np.arange(len(groups) * len(models) + 1))
    return [(models[j % len(models)], groups[j // len(models)], v[bounds[j]:bounds[j + 1]])
            for j in range(len(groups) * len(models)) if bounds[j + 1] > bounds[j]]


def histogram(values: pd.DataFrame, lo: float, hi: float, bins: int = 40) -> pd.DataFrame:
    """Binned densities per (model, group) on shared edges; values outside [lo, hi] go to the end bins
    (a false spike there: pass a range that covers every value, as core.app.views.value_range does).

    Columns: model, group, start, end, count, density (count / (n * width): areas sum to 1).
    """
    edges = np.linspace(lo, hi, bins + 1)
    width = edges[1] - edges[0]
    parts = grouped_values(values)
    if not parts:
        return pd.DataFrame(columns=["model", "group", "start", "end", "count", "density"])
    counts = [np.histogram(np.clip(v, lo, hi), bins=edges)[0] for _, _, v in parts]
    sizes = np.repeat([max(len(v), 1) for _, _, v in parts], bins)
    count = np.concatenate(counts)
    return pd.DataFrame({"model": np.repeat([m for m, _, _ in parts], bins),
                         "group": np.repeat([g for _, g, _ in parts], bins),
                         "start": np.tile(edges[:-1], len(parts)), "end": np.tile(edges[1:], len(parts)),
                         "count": count, "density": count / sizes / width})
