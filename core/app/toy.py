"""Why adversarial training shrinks logits, on a model small enough to see: linear softmax regression.

For logits z = W x + b, an Linf perturbation |delta|_inf <= eps changes the margin between the true
class y and a class j, z_y - z_j, by (w_y - w_j) . delta, which is at least -eps * |w_y - w_j|_1 and
reaches it at delta = -eps * sign(w_y - w_j). So the worst case of each margin is closed-form, and
adversarial training is training on the logits

    z~_j = z_j + eps * |w_y - w_j|_1   (j != y),    z~_y = z_y

(exact for two classes; for more classes each margin gets its own worst case, a tight upper bound on
the adversarial loss). The penalty eps * |w_y - w_j|_1 grows with the weight differences that also
set every logit gap, (w_y - w_j) . x: training trades fit for smaller weights, so the max logit and
the gap shrink on every input as eps grows. Weight decay keeps the (loss-free) common shift of all
logits at zero, so the max logit is meaningful.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.engine import analysis
from core.errors import LogitscopeError

# The AT model has collapsed when its mean confidence above chance (1/K) is under this fraction of the
# standard model's: its logits are nearly equal on every input. Seen once eps is about as large as the
# classes' separation allows (eps 1 at separation 1), never at the page's defaults (about 0.98 there).
COLLAPSE_FRACTION = 0.1


@dataclass(frozen=True)
class ToySpec:
    """Synthetic data and the training of the linear model."""

    n_classes: int = 3
    n_per_class: int = 150
    separation: float = 2.0   # distance of each class mean from the origin (means on a circle)
    noise: float = 0.8        # standard deviation of the Gaussian around each mean
    steps: int = 300          # full-batch Adam steps: enough to converge on 2-D data
    lr: float = 0.05
    weight_decay: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        if not 2 <= self.n_classes <= 8:
            raise LogitscopeError(f"The demo uses 2 to 8 classes, got {self.n_classes}.")
        if not (math.isfinite(self.separation) and 0 < self.separation <= 10):
            raise LogitscopeError(f"separation must be in (0, 10], got {self.separation}.")
        if not (math.isfinite(self.noise) and 0 < self.noise <= 5):
            raise LogitscopeError(f"noise must be in (0, 5], got {self.noise}.")


def make_data(spec: ToySpec) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs in 2-D, means evenly spaced on a circle. x (N, 2) float64, y (N,) int64."""
    rng = np.random.default_rng(spec.seed)
    angles = 2 * np.pi * np.arange(spec.n_classes) / spec.n_classes
    means = spec.separation * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    y = np.repeat(np.arange(spec.n_classes), spec.n_per_class)
    x = means[y] + spec.noise * rng.standard_normal((len(y), 2))
    return x, y


def worst_case_logits(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray, eps: float) -> np.ndarray:
    """Logits (N, K) whose margins are the worst case over the Linf ball of radius eps."""
    z = x @ w.T + b
    diff = np.abs(w[y][:, None, :] - w[None, :, :]).sum(axis=2)  # (N, K): |w_y - w_j|_1, 0 for j = y
    return z + eps * diff


def loss_and_grad(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray, eps: float,
                  weight_decay: float) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean worst-case cross-entropy plus weight decay, and its gradients with respect to W and b.

    With G = (softmax(z~) - onehot(y)) / N, the linear part gives G^T x and sum(G); the penalty
    eps * |w_y - w_j|_1 adds eps * G_ij * sign(w_y - w_j) to w_y and subtracts it from w_j.
    """
    n = len(y)
    z = worst_case_logits(w, b, x, y, eps)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    loss = float(-np.log(p[np.arange(n), y] + 1e-300).mean()) + weight_decay * float((w ** 2).sum() + (b ** 2).sum())
    g = p.copy()
    g[np.arange(n), y] -= 1
    g /= n
    gw = g.T @ x + 2 * weight_decay * w
    gb = g.sum(axis=0) + 2 * weight_decay * b
    if eps > 0:
        a = g[:, :, None] * np.sign(w[y][:, None, :] - w[None, :, :])  # (N, K, d)
        gw -= eps * a.sum(axis=0)
        np.add.at(gw, y, eps * a.sum(axis=1))
    return loss, gw, gb


def train_linear(x: np.ndarray, y: np.ndarray, eps: float, spec: ToySpec) -> tuple[np.ndarray, np.ndarray]:
    """Weights W (K, d) and biases b (K,) minimising the (worst-case, for eps > 0) cross-entropy.

    Full-batch Adam in numpy: a few milliseconds per model, so the page can retrain on every move.
    """
    if not (math.isfinite(eps) and 0 <= eps <= 5):
        raise LogitscopeError(f"epsilon must be between 0 and 5 for the demo, got {eps}.")
    rng = np.random.default_rng(spec.seed)
    params = [0.01 * rng.standard_normal((spec.n_classes, x.shape[1])), np.zeros(spec.n_classes)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    b1, b2 = 0.9, 0.999
    for t in range(1, spec.steps + 1):
        _, gw, gb = loss_and_grad(params[0], params[1], x, y, eps, spec.weight_decay)
        for i, g in enumerate((gw, gb)):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            params[i] = params[i] - spec.lr * (m[i] / (1 - b1 ** t)) / (np.sqrt(v[i] / (1 - b2 ** t)) + 1e-8)
    return params[0], params[1]


def logit_stats(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray, eps_eval: float) -> dict[str, float]:
    """Mean max logit, gap and confidence on clean inputs; clean and robust accuracy at eps_eval."""
    z = x @ w.T + b
    top2 = -np.partition(-z, 1, axis=1)[:, :2]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    worst = worst_case_logits(w, b, x, y, eps_eval)
    others = worst.copy()
    others[np.arange(len(y)), y] = -np.inf
    return {
        "mean_max_logit": float(top2[:, 0].mean()), "mean_logit_gap": float((top2[:, 0] - top2[:, 1]).mean()),
        "mean_confidence": float(p.max(axis=1).mean()), "clean_accuracy": float((z.argmax(1) == y).mean()),
        "robust_accuracy": float((worst[np.arange(len(y)), y] > others.max(axis=1)).mean()),
        "weight_l1": float(np.abs(w).sum()),
    }


@dataclass(frozen=True)
class ToyResult:
    """Standard and adversarially trained linear models on the same data, at one eps."""

    eps: float
    x: np.ndarray
    y: np.ndarray
    models: dict[str, tuple[np.ndarray, np.ndarray]]  # "standard" / "adversarial" -> (W, b)
    stats: pd.DataFrame                               # one row per model, columns of logit_stats

    @property
    def n_classes(self) -> int:
        return len(next(iter(self.models.values()))[1])

    def collapsed(self) -> bool:
        """Whether the adversarially trained model predicts (nearly) the same logits for every input.

        Past an eps about as large as the class separation allows, almost every margin can be pushed
        below zero, and the best robust linear model shrinks its weights to almost nothing: a
        (nearly) constant prediction, its confidence at chance, 1/K.
        """
        s = self.stats.set_index("model")
        chance = 1 / self.n_classes
        above = s.loc["adversarial", "mean_confidence"] - chance
        return bool(self.eps > 0 and above < COLLAPSE_FRACTION * (s.loc["standard", "mean_confidence"] - chance))

    def per_sample(self) -> pd.DataFrame:
        """Per-sample max logit and gap of both models. Columns: model, max_logit, logit_gap."""
        parts = []
        for name, (w, b) in self.models.items():
            z = self.x @ w.T + b
            top2 = -np.partition(-z, 1, axis=1)[:, :2]
            parts.append(pd.DataFrame({"model": name, "max_logit": top2[:, 0], "logit_gap": top2[:, 0] - top2[:, 1]}))
        return pd.concat(parts, ignore_index=True)

    def histogram(self, quantity: str, bins: int = 30) -> pd.DataFrame:
        """Binned densities of "max_logit" or "logit_gap" for both models (`analysis.histogram`'s columns: the
        app's binning, so the toy's charts read like the others)."""
        per = self.per_sample()
        values = pd.DataFrame({"model": pd.Categorical(per["model"], categories=list(self.models)), "group": "all",
                               "value": per[quantity]})
        lo, hi = float(values["value"].min()), float(values["value"].max())
        return analysis.histogram(values, lo, hi if hi > lo else lo + 1.0, bins)

    def regions(self, n: int = 60) -> pd.DataFrame:
        """Predicted class of both models on an n x n grid of cells over the data.

        Columns: model, x0, x1, y0, y1 (the cell), pred.
        """
        lo, hi = self.x.min(axis=0) - 0.5, self.x.max(axis=0) + 0.5
        ex, ey = np.linspace(lo[0], hi[0], n + 1), np.linspace(lo[1], hi[1], n + 1)
        cx, cy = np.meshgrid((ex[:-1] + ex[1:]) / 2, (ey[:-1] + ey[1:]) / 2)
        i, j = np.meshgrid(np.arange(n), np.arange(n))
        pts = np.stack([cx.ravel(), cy.ravel()], axis=1)
        cells = {"x0": ex[i.ravel()], "x1": ex[i.ravel() + 1], "y0": ey[j.ravel()], "y1": ey[j.ravel() + 1]}
        parts = [pd.DataFrame({"model": name, **cells, "pred": (pts @ w.T + b).argmax(1)})
                 for name, (w, b) in self.models.items()]
        return pd.concat(parts, ignore_index=True)


def demo(spec: ToySpec, eps: float) -> ToyResult:
    """Train the standard model and the model adversarially trained at eps; compare their logits."""
    x, y = make_data(spec)
    models = {"standard": train_linear(x, y, 0.0, spec), "adversarial": train_linear(x, y, eps, spec)}
    rows = [{"model": name, **logit_stats(w, b, x, y, eps)} for name, (w, b) in models.items()]
    return ToyResult(float(eps), x, y, models, pd.DataFrame(rows))


def sweep(spec: ToySpec, eps_values) -> pd.DataFrame:
    """logit_stats of models adversarially trained at each eps (robust accuracy at that same eps)."""
    x, y = make_data(spec)
    rows = []
    for e in eps_values:
        w, b = train_linear(x, y, float(e), spec)
        rows.append({"eps": float(e), **logit_stats(w, b, x, y, float(e))})
    return pd.DataFrame(rows)
