"""The computations behind the app's pages: from cached logits to the tables each page shows.

Pages stay thin: they turn widgets into a `Selection` plus a few parameters and call one function
here (through a cached wrapper). Everything reads the logits cache and never trains or attacks:
`core.app.prepare` does that, in the background, before a page asks.

The central object is `LogitSet`: every selected model's logits at every epsilon of the grid, as
numpy arrays, so that moving epsilon or changing the quantity is a slice, not a recomputation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from core.config import AttackSpec, DataSpec
from core.engine import analysis
from core.engine.data import dataset_classes
from core.engine.logits import entry_ok, get_grid, read
from core.engine.masking import MaskingReport
from core.errors import LogitscopeError
from core.study import evidence
from core.study.hyper import eps_grid, eval_attack, eval_data
from core.study.recipes import Recipe, default_recipes, zoo_recipes
from core.study.sweep import swept_recipes

QUANTITY_LABELS = {**analysis.QUANTITY_LABELS, "logits": "all logit values"}  # the quantities a page can plot
SPLITS = {"none": "all samples together", "correct": "correct / incorrect", "class": "true class"}
NORM_LABELS = {"linf": "Linf", "l2": "L2"}


@dataclass(frozen=True)
class Selection:
    """What the sidebar chose: a dataset, the models to compare, and the evaluation attack."""

    dataset: str = "digits"
    models: tuple[str, ...] = ("standard", "pgd-at")
    norm: str = "linf"
    steps: int = 20
    seed: int = 0
    data_dir: str | None = None  # the app's data-folder setting (torchvision files, relative own-data paths)

    def attack(self) -> AttackSpec:
        return eval_attack(self.dataset, self.norm, self.steps)

    def data(self) -> DataSpec:
        """The evaluation split: the test split, cut to the dataset's evaluation limit if it has one."""
        return eval_data(self.dataset)

    def grid(self) -> tuple[float, ...]:
        return eps_grid(self.dataset, self.norm, self.data_dir)

    def evidence(self) -> evidence.Evidence:
        """The evidence plan: this PGD grid, plus AutoAttack ("fast") and the masking check at the findings' eps."""
        return evidence.evidence(self.dataset, self.norm, self.steps, data_dir=self.data_dir, grid=self.grid())


GRADIENTS_OK, GRADIENTS_FLAGGED, GRADIENTS_UNKNOWN = "ok", "masking suspected", "not checked yet"


@dataclass(frozen=True)
class ModelEvidence:
    """What the evidence plan says of one model: its robust accuracy under the reliable attack at the
    findings' eps (None: not computed) and its gradient-masking check (None until every entry is cached)."""

    reliable: float | None
    report: MaskingReport | None

    @property
    def gradients(self) -> str:
        """The badge: "ok", "masking suspected" or "not checked yet"."""
        if self.report is None:
            return GRADIENTS_UNKNOWN
        return GRADIENTS_FLAGGED if self.report.flagged else GRADIENTS_OK


def reliable_accuracy(recipe: Recipe, data: DataSpec, ev: evidence.Evidence) -> float | None:
    """Accuracy under the reliable attack at the findings' eps, if that entry is cached (never computes)."""
    spec = ev.reliable.at(ev.eps) if ev.eps > 0 else None
    rec = read(recipe.key, data, spec) if entry_ok(recipe.key, data, spec) else None
    return None if rec is None else analysis.accuracy(rec.logits, rec.labels)


def model_evidence(recipes: Mapping[str, Recipe], data: DataSpec, ev: evidence.Evidence,
                   data_dir: str | None = None) -> dict[str, ModelEvidence]:
    """Each model's `ModelEvidence`, read from the cache (a few file checks for a model not computed yet)."""
    n_classes = len(dataset_classes(data.name, data_dir))
    return {n: ModelEvidence(reliable_accuracy(r, data, ev), evidence.masking(r, data, ev, n_classes))
            for n, r in recipes.items()}


def catalog(dataset: str, seed: int = 0, extra: Sequence[Recipe] = ()) -> dict[str, Recipe]:
    """Every model the app can show for a dataset: the default study, the zoo models evaluated into this
    cache (`python -m core precompute --zoo`), the swept models (`python -m core sweep`; one that is a
    default-study model is listed under its default-study name), then `extra` (lab runs)."""
    out = {r.name: r for r in default_recipes(dataset, seed)}
    keys = {r.key for r in out.values()}
    for r in [*zoo_recipes(dataset), *(r for r in swept_recipes(dataset) if r.key not in keys), *extra]:
        out.setdefault(r.name, r)
    return out


@dataclass(frozen=True)
class LogitSet:
    """Logits of several models over an epsilon grid, on one data split.

    logits[name] has shape (E, N, K): E epsilons (in `eps` order), N samples, K classes.
    """

    names: tuple[str, ...]
    eps: tuple[float, ...]
    labels: np.ndarray  # (N,) int64
    logits: dict[str, np.ndarray]
    classes: tuple[str, ...]

    def at(self, name: str, eps: float) -> np.ndarray:
        """(N, K) logits of one model at one epsilon of the grid."""
        return self.logits[name][self.eps_index(eps)]

    def eps_index(self, eps: float) -> int:
        for i, e in enumerate(self.eps):
            if math.isclose(e, eps, rel_tol=1e-9, abs_tol=1e-12):
                return i
        raise LogitscopeError(f"epsilon {eps:g} is not on the grid ({', '.join(f'{e:g}' for e in self.eps)}): "
                              "pick one of those values.")


def _not_computed(name: str):
    def fail():
        raise LogitscopeError(f"The logits of {name!r} are not computed yet: wait for the background job "
                              "or press 'Train missing models' on the overview page.")
    return fail


def load_logit_set(recipes: dict[str, Recipe], data: DataSpec, attack: AttackSpec, grid: Sequence[float],
                   data_dir: str | None = None) -> LogitSet:
    """Read the cached logits of the named recipes over the grid (raises if any entry is missing)."""
    if not recipes:
        raise LogitscopeError("No models selected: pick at least one model in the sidebar.")
    eps = tuple(sorted(float(e) for e in grid))
    logits, labels = {}, None
    for name, r in recipes.items():
        records = get_grid(_not_computed(name), r.key, data, attack, eps)
        logits[name] = np.stack([records[e].logits.numpy() for e in eps]).astype(np.float32)
        labels = records[eps[0]].labels.numpy().astype(np.int64)
    return LogitSet(tuple(recipes), eps, labels, logits, dataset_classes(data.name, data_dir))


def sample_table(bundle: LogitSet) -> pd.DataFrame:
    """Per-sample statistics of every model at every epsilon, long format.

    Columns: model, eps, idx, label, pred, correct and analysis.QUANTITIES.
    """
    parts = []
    for name in bundle.names:
        for i, e in enumerate(bundle.eps):
            t = analysis.per_sample(bundle.logits[name][i], bundle.labels)
            t.insert(0, "idx", np.arange(len(t)))
            t.insert(0, "eps", e)
            t.insert(0, "model", name)
            parts.append(t)
    out = pd.concat(parts, ignore_index=True)
    out["model"] = pd.Categorical(out["model"], categories=list(bundle.names))
    return out


def group_names(split: str, classes: Sequence[str]) -> list[str]:
    """The groups of a split in the order pages show them: class 0, 1, ... (class index), correct first."""
    by_class = list(dict.fromkeys(f"class {c}" for c in classes))
    return {"correct": ["correct", "incorrect"], "class": by_class}.get(split, ["all"])


def _group(labels: np.ndarray, correct: np.ndarray, split: str, classes: Sequence[str]) -> np.ndarray:
    if split == "correct":
        return np.where(correct, "correct", "incorrect")
    if split == "class":
        return np.array([f"class {classes[y]}" for y in labels])
    return np.full(len(labels), "all")


def quantity_values(bundle: LogitSet, table: pd.DataFrame, eps: float, quantity: str,
                    split: str = "none") -> pd.DataFrame:
    """The values of a quantity per model at one epsilon, with the group each belongs to.

    Columns: model, group (categorical, in `group_names` order), value. quantity "logits" gives every
    logit of every sample (N*K rows per model); the others give one value per sample.
    """
    if quantity not in QUANTITY_LABELS:
        raise LogitscopeError(f"Unknown quantity {quantity!r}: choose one of {', '.join(QUANTITY_LABELS)}.")
    if split not in SPLITS:
        raise LogitscopeError(f"Unknown split {split!r}: choose one of {', '.join(SPLITS)}.")
    i = bundle.eps_index(eps)
    rows = table[table["eps"] == bundle.eps[i]]
    parts = []
    for name in bundle.names:
        t = rows[rows["model"] == name]
        group = _group(t["label"].to_numpy(), t["correct"].to_numpy(), split, bundle.classes)
        if quantity == "logits":
            z = bundle.logits[name][i]
            values, group = z.reshape(-1), np.repeat(group, z.shape[1])
        else:
            values = t[quantity].to_numpy()
        parts.append(pd.DataFrame({"model": name, "group": group, "value": values}))
    out = pd.concat(parts, ignore_index=True)
    out["model"] = pd.Categorical(out["model"], categories=list(bundle.names))
    out["group"] = pd.Categorical(out["group"], categories=group_names(split, bundle.classes))
    return out


def value_range(bundle: LogitSet, table: pd.DataFrame, quantity: str) -> tuple[float, float]:
    """The whole range of the quantity over every model and epsilon: fixed axes that clip no sample into an end bin."""
    if quantity == "logits":
        v = np.concatenate([z.reshape(-1) for z in bundle.logits.values()])
    else:
        v = table[quantity].to_numpy()
    v = v[np.isfinite(v)]
    if not len(v):
        return 0.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    if quantity == "confidence":
        hi = max(hi, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return float(lo), float(hi)


def summary(values: pd.DataFrame, reference: str | None = None) -> pd.DataFrame:
    """Statistics of the values per (group, model), with the KS distance to the reference model.

    Columns: group, model, n, mean, std, median, q05, q95, ks (Kolmogorov-Smirnov statistic against
    the reference model's values in the same group; 0 = identical distributions).
    """
    parts = analysis.grouped_values(values)
    if not parts:
        return pd.DataFrame(columns=["group", "model", "n", "mean", "std", "median", "q05", "q95", "ks"])
    reference = reference or parts[0][0]
    refs = {g: v for m, g, v in parts if m == reference}
    rows = []
    for model, group, v in parts:
        q05, med, q95 = np.percentile(v, [5, 50, 95])
        ref = refs.get(group)
        ks = analysis.ks_distance(v, ref) if ref is not None and model != reference else 0.0
        rows.append({"group": group, "model": model, "n": len(v), "mean": float(v.mean()), "std": float(v.std()),
                     "median": float(med), "q05": float(q05), "q95": float(q95), "ks": ks})
    return pd.DataFrame(rows)


def distribution(bundle: LogitSet, table: pd.DataFrame, eps: float, quantity: str, split: str = "none",
                 bins: int = 40) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Everything the distributions page redraws when epsilon or the quantity moves.

    Returns (histogram, summary); the histogram's edges cover every epsilon, so axes do not jump.
    """
    values = quantity_values(bundle, table, eps, quantity, split)
    lo, hi = value_range(bundle, table, quantity)
    return analysis.histogram(values, lo, hi, bins), summary(values)


def accuracy_curve(table: pd.DataFrame) -> pd.DataFrame:
    """Accuracy of each model at each epsilon. Columns: model, eps, accuracy."""
    out = table.groupby(["model", "eps"], observed=True)["correct"].mean().rename("accuracy").reset_index()
    return out


def confidence_pairs(table: pd.DataFrame, a: str, b: str, eps: float) -> pd.DataFrame:
    """Per-sample confidences of models a and b at one epsilon, side by side.

    Columns: idx, label, pred_a, pred_b, conf_a, conf_b, correct_a, correct_b, diff (conf_a - conf_b),
    outcome ("both correct", "only A correct", ...).
    """
    if a == b:
        raise LogitscopeError("Pick two different models to compare.")
    rows = table[np.isclose(table["eps"], eps)]
    ta = rows[rows["model"] == a].set_index("idx")
    tb = rows[rows["model"] == b].set_index("idx")
    if ta.empty or tb.empty:
        raise LogitscopeError(f"No logits for {a!r} or {b!r} at epsilon {eps:g}: pick models from the sidebar.")
    out = pd.DataFrame({
        "idx": ta.index.to_numpy(), "label": ta["label"].to_numpy(),
        "pred_a": ta["pred"].to_numpy(), "pred_b": tb["pred"].to_numpy(),
        "conf_a": ta["confidence"].to_numpy(), "conf_b": tb["confidence"].to_numpy(),
        "correct_a": ta["correct"].to_numpy(), "correct_b": tb["correct"].to_numpy(),
    })
    out["diff"] = out["conf_a"] - out["conf_b"]
    outcome = np.select([out.correct_a & out.correct_b, out.correct_a, out.correct_b],
                        ["both correct", "only A correct", "only B correct"], "both wrong")
    out["outcome"] = outcome
    return out


def pair_statistics(pairs: pd.DataFrame) -> dict[str, float]:
    """Spearman and Kendall correlations of the two confidences, plus the mean difference."""
    corr = analysis.rank_correlation(pairs["conf_a"], pairs["conf_b"])
    return {**corr, "mean_diff": float(pairs["diff"].mean()), "n": int(len(pairs))}


def top_pairs(pairs: pd.DataFrame, k: int = 8) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The k samples where A is most confident relative to B, and the k where B is."""
    a_more, b_more = analysis.top_differences(pairs["conf_a"].to_numpy(), pairs["conf_b"].to_numpy(), k)
    return pairs.iloc[a_more].reset_index(drop=True), pairs.iloc[b_more].reset_index(drop=True)
