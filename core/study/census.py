"""Every model of a dataset as one row of numbers read from the logits cache: the "Across models" census.

`census` reads, never computes: each model's clean logits on the evaluation split give its mean max
logit, mean logit gap (max minus second-largest), mean confidence (max softmax), clean accuracy and the
rank correlation (Spearman) of its per-image confidences with a reference model's; the entry under
attack at `eps` gives its robust accuracy. Robust accuracy comes from AutoAttack where that entry is
cached (the versions of `reliable`, in order of preference), otherwise from the PGD grid's entry, which
is an upper bound and says so in `robust_attack`. Every mean and accuracy comes with its 95% bootstrap
interval over the test images (`core.engine.stats`, as `core.study.report` does).

`trend` is the relation across models: a least-squares line, Spearman's rho with its bootstrap interval
over models (models resampled), and a verdict that is "resolved" only when that interval excludes 0.

Example:
    >>> recipes = {r.name: r for r in default_recipes("digits")}    # or the app's catalog, sweeps and zoo included
    >>> frame = census(recipes, "digits", eps=0.1, reference="standard")
    >>> frame[["name", "mean_max_logit", "robust_accuracy", "robust_attack"]]
    >>> trend(frame[frame.plotted], "mean_max_logit").verdict   # e.g. 'not resolved with 5 models'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from core.config import AttackSpec, DataSpec
from core.engine import analysis, stats
from core.engine.logits import LogitsRecord, entry_ok, read
from core.engine.zoo_info import published
from core.errors import LogitscopeError
from core.study.evidence import finding_eps
from core.study.hyper import eps_grid, eval_attack, eval_data, reliable_attack
from core.study.recipes import Recipe, default_recipes
from core.study.report import LEVEL, N_BOOT
from core.study.sweep import method_of, swept_recipes, train_eps_of

STATISTICS = {"mean_max_logit": "max_logit", "mean_logit_gap": "logit_gap", "mean_confidence": "confidence"}
RANK_CORR = "confidence_rank_corr"
SOURCES = ("default study", "sweep", "RobustBench", "other")
VERSIONS = ("standard", "fast")  # AutoAttack versions, the stronger first
UPPER_BOUND = ": an upper bound"  # ends the attack text of a robust accuracy made by PGD


def _interval_columns(name: str) -> list[str]:
    return [name, f"{name}_lo", f"{name}_hi"]


COLUMNS = ["name", "key", "method", "source", "train_eps", "seed", "arch", "threat", "clean_cached", "n_images",
           *(c for s in STATISTICS for c in _interval_columns(s)), *_interval_columns(RANK_CORR), "reference",
           *_interval_columns("clean_accuracy"), *_interval_columns("robust_accuracy"), "robust_attack",
           "robust_reliable", "eps", "pgd_accuracy", "pgd_attack", "published_clean", "published_autoattack",
           "published_eps", "plotted"]


@dataclass(frozen=True)
class Trend:
    """The relation of y to x across models: the least-squares line and Spearman's rho with its interval."""

    n: int                 # models with both numbers
    slope: float           # least squares y = slope * x + intercept (NaN with fewer than 2 distinct x)
    intercept: float
    spearman: float        # rank correlation across models
    lo: float              # its bootstrap interval (recipes resampled with replacement, their seeds together)
    hi: float
    level: float = LEVEL
    groups: int | None = None  # recipes among the models (seeds of one recipe count once); None: as many as models

    @property
    def resolved(self) -> bool:
        """True when the interval excludes 0 (never with a NaN interval)."""
        return bool(self.lo > 0 or self.hi < 0)

    @property
    def verdict(self) -> str:
        """'resolved: ...' when the interval excludes 0, else 'not resolved with N models' (said plainly)."""
        models = f"{self.n} model{'' if self.n == 1 else 's'}"
        if self.groups is not None and self.groups < self.n:
            models += f" ({self.groups} recipe{'' if self.groups == 1 else 's'}, seeds resampled together)"
        if self.resolved:
            side = "higher" if self.lo > 0 else "lower"
            return f"resolved: across {models}, a higher value goes with {side} robust accuracy"
        return f"not resolved with {models}"


def versions(reliable: str | Sequence[str]) -> tuple[str, ...]:
    """The AutoAttack versions to look for, in order: "fast", "standard" or a sequence of them."""
    return (reliable,) if isinstance(reliable, str) else tuple(reliable)


def robust_entry(recipe: Recipe, data: DataSpec, pgd: AttackSpec, eps: float,
                 reliable: str | Sequence[str] = VERSIONS) -> tuple[LogitsRecord | None, AttackSpec]:
    """The record robust accuracy at eps is read from (AutoAttack if cached, else PGD), with its attack.

    The record is None when neither entry is cached; the attack is then the PGD one that would give it.
    """
    for v in versions(reliable):
        spec = reliable_attack(data.name, pgd.norm, v).at(eps)
        if entry_ok(recipe.key, data, spec):
            rec = read(recipe.key, data, spec)
            if rec is not None:
                return rec, spec
    spec = pgd.at(eps)
    return (read(recipe.key, data, spec) if entry_ok(recipe.key, data, spec) else None), spec


def attack_text(attack: AttackSpec) -> str:
    """The attack as a number's label says it: "Linf AutoAttack (...), eps 0.1", "Linf PGD-20 (...): an upper bound"."""
    return attack.describe() + ("" if attack.reliable else UPPER_BOUND)


def state(recipes: Mapping[str, Recipe], dataset: str, norm: str = "linf", steps: int | None = None,
          eps: float | None = None, reliable: str | Sequence[str] = VERSIONS, data_dir: str | None = None) -> list:
    """What `census` would read, as a small JSON-able list (model keys and which entries are cached): a cache key."""
    data, pgd = eval_data(dataset), eval_attack(dataset, norm, steps)
    eps = _eps(dataset, norm, eps, data_dir)
    return [(n, r.key, entry_ok(r.key, data, None), [entry_ok(r.key, data, reliable_attack(dataset, norm, v).at(eps))
                                                     for v in versions(reliable)], entry_ok(r.key, data, pgd.at(eps)))
            for n, r in recipes.items()]


def _eps(dataset: str, norm: str, eps: float | None, data_dir: str | None = None) -> float:
    """eps, checked to be above 0; None: the findings' epsilon (where the study computes AutoAttack)."""
    if eps is None:
        return finding_eps(dataset, norm, eps_grid(dataset, norm, data_dir))
    if not eps > 0:
        raise LogitscopeError(f"Robust accuracy needs an epsilon above 0, got {eps:g}: pick one of the grid's others.")
    return float(eps)


def source_of(recipe: Recipe, default_keys: set[str], swept_keys: set[str]) -> str:
    """"default study", "sweep", "RobustBench" or "other" (a lab run, a model of another seed)."""
    if recipe.role == "zoo":
        return "RobustBench"
    if recipe.key in default_keys:
        return "default study"
    return "sweep" if recipe.key in swept_keys else "other"


def _describe(recipe: Recipe, source: str) -> dict:
    """The columns that say what a model is: method, source, training eps, seed, architecture, published numbers."""
    row = {"method": method_of(recipe), "source": source, "threat": None, "published_clean": np.nan,
           "published_autoattack": np.nan, "published_eps": np.nan}
    if recipe.role == "zoo":
        ds, threat, name = recipe.zoo
        pub = published(ds, threat, name)
        row.update(threat=threat, seed=None, arch=pub.architecture if pub and pub.architecture else None,
                   train_eps=pub.eps if pub and pub.eps is not None else np.nan)
        if pub is not None:
            row.update(published_clean=_num(pub.clean), published_autoattack=_num(pub.autoattack),
                       published_eps=_num(pub.eps))
        return row
    eps = train_eps_of(recipe)
    return {**row, "seed": recipe.spec.train.seed, "arch": recipe.spec.arch, "train_eps": 0.0 if eps is None else eps}


def _num(v: float | None) -> float:
    return np.nan if v is None else float(v)


def _with_interval(row: dict, name: str, iv: stats.Interval) -> None:
    row[name], row[f"{name}_lo"], row[f"{name}_hi"] = iv.estimate, iv.lo, iv.hi


def _clean_numbers(row: dict, rec: LogitsRecord, n_boot: int) -> pd.DataFrame:
    """Fill the clean statistics and accuracy (with intervals) of one model; return its per-image table."""
    table = analysis.per_sample(rec.logits, rec.labels)
    values = [table[c].to_numpy(np.float64) for c in STATISTICS.values()] + [table["correct"].to_numpy(np.float64)]
    ivs = stats.joint_intervals([values], lambda *x: np.stack([v.mean(axis=1) for v in x], axis=1), n_boot, LEVEL)
    for name, iv in zip([*STATISTICS, "clean_accuracy"], ivs):
        _with_interval(row, name, iv)
    row["n_images"] = len(table)
    return table


def _rank_corr(conf: np.ndarray, ref: np.ndarray | None, n_boot: int) -> stats.Interval | None:
    """Spearman of two models' per-image confidences, images resampled jointly; None without a comparable reference."""
    if ref is None or len(ref) != len(conf):
        return None
    return stats.paired_statistic([stats.dense_ranks(conf)], [stats.dense_ranks(ref)], stats.spearman,
                                  max(n_boot // 2, 200), LEVEL)


def census(recipes: Mapping[str, Recipe], dataset: str, norm: str = "linf", steps: int | None = None,
           eps: float | None = None, reliable: str | Sequence[str] = VERSIONS, reference: str | None = None,
           data_dir: str | None = None, n_boot: int = N_BOOT) -> pd.DataFrame:
    """One row per model (unique by model key, the first name kept) of numbers read from the cache (never computed).

    recipes: name -> Recipe (e.g. `core.app.views.catalog(dataset)`); eps: where robust accuracy is read
    (default: the findings' epsilon); reliable: the AutoAttack version(s) to prefer, in order;
    reference: the model whose per-image clean confidences the rank correlation compares with (its own
    row is 1); data_dir: where the dataset lies (an L2 grid's default eps needs its image size).

    Columns (COLUMNS): name, key, method, source, train_eps (0 for standard; a zoo model's published eps
    or NaN), seed, arch, threat (zoo), clean_cached, n_images; mean_max_logit, mean_logit_gap,
    mean_confidence, confidence_rank_corr, clean_accuracy and robust_accuracy each with _lo and _hi (95%
    interval over test images); robust_attack (what made it: AutoAttack, or PGD with ": an upper bound"),
    robust_reliable, eps, pgd_accuracy (PGD at eps, an upper bound) and pgd_attack; the published_* numbers
    of a RobustBench model (NaN when unknown); plotted (clean and robust numbers both cached).
    """
    data, pgd = eval_data(dataset), eval_attack(dataset, norm, steps)
    eps = _eps(dataset, norm, eps, data_dir)
    default_keys = {r.key for r in default_recipes(dataset)}
    swept_keys = {r.key for r in swept_recipes(dataset)}
    unique = {}
    for name, r in recipes.items():
        unique.setdefault(r.key, (name, r))
    ref_rec = None
    if reference is not None and reference in recipes:
        ref_rec = read(recipes[reference].key, data, None)
    ref_conf = analysis.per_sample(ref_rec.logits, ref_rec.labels)["confidence"].to_numpy() if ref_rec else None
    rows = []
    for key, (name, r) in unique.items():
        row = {c: np.nan for c in COLUMNS}
        row.update(name=name, key=key, **_describe(r, source_of(r, default_keys, swept_keys)), eps=eps,
                   reference=reference if ref_conf is not None else None, robust_attack=None, pgd_attack=None,
                   robust_reliable=False)
        clean = read(key, data, None) if entry_ok(key, data, None) else None
        row["clean_cached"] = clean is not None
        if clean is not None:
            table = _clean_numbers(row, clean, n_boot)
            iv = _rank_corr(table["confidence"].to_numpy(), ref_conf, n_boot)
            if iv is not None:
                _with_interval(row, RANK_CORR, iv)
        robust, attack = robust_entry(r, data, pgd, eps, reliable)
        if robust is not None:
            _with_interval(row, "robust_accuracy", stats.interval(
                [(robust.logits.argmax(1) == robust.labels).numpy().astype(np.float64)], np.mean, n_boot, LEVEL))
            row.update(robust_attack=attack_text(attack), robust_reliable=attack.reliable)
        pgd_rec = read(key, data, pgd.at(eps)) if entry_ok(key, data, pgd.at(eps)) else None
        if pgd_rec is not None:
            row.update(pgd_accuracy=analysis.accuracy(pgd_rec.logits, pgd_rec.labels),
                       pgd_attack=attack_text(pgd.at(eps)))
        row["plotted"] = bool(row["clean_cached"] and robust is not None)
        rows.append(row)
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["seed"] = pd.array([None if pd.isna(s) else int(s) for s in out["seed"]], dtype="Int64")  # a zoo model: <NA>
    return out


def recipe_group(name: str) -> str:
    """Models that differ only in their seed share a group: the name without its seed part.

    "pgd-at-eps0.1-s1" -> "pgd-at-eps0.1", "student:pgd-at-eps0.1-s2:none" -> "student:pgd-at-eps0.1:none";
    default-study, lab and zoo names have no seed part and are groups of their own.
    """
    return re.sub(r"-s\d+(?=$|-|:)", "", name)


def _cluster_spearman(xs: np.ndarray, ys: np.ndarray, groups: Sequence[str], n_boot: int, level: float,
                      seed: int) -> tuple[float, float]:
    """Spearman's rho's bootstrap interval with whole groups resampled (with replacement), their models together."""
    members = [np.flatnonzero(np.asarray(groups) == g) for g in dict.fromkeys(groups)]
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        reps[b] = stats.spearman(xs[idx][None], ys[idx][None])[0] if np.ptp(xs[idx]) and np.ptp(ys[idx]) else np.nan
    tail = (1 - level) / 2
    ok = reps[~np.isnan(reps)]
    return (float(np.quantile(ok, tail)), float(np.quantile(ok, 1 - tail))) if len(ok) else (math.nan, math.nan)


def trend(frame: pd.DataFrame, x: str, y: str = "robust_accuracy", n_boot: int = N_BOOT, level: float = LEVEL,
          seed: int = 0) -> Trend:
    """Least squares and Spearman's rho of y on x across the rows with both, with rho's bootstrap interval.

    The bootstrap resamples recipes, not models: the seeds of one recipe (`recipe_group` of the "name"
    column) are drawn together, since they are not independent draws of a model. Without a "name"
    column every row is its own group (the models resampled).
    """
    cols = [x, y]
    both = frame[cols].astype(float)
    keep = both.notna().all(axis=1).to_numpy()
    xs, ys = both[x].to_numpy()[keep], both[y].to_numpy()[keep]
    names = frame["name"].astype(str).to_numpy()[keep] if "name" in frame else np.arange(len(xs)).astype(str)
    groups = [recipe_group(n) for n in names]
    n, g = len(xs), len(set(groups))
    slope = intercept = math.nan
    if n >= 2 and np.ptp(xs) > 0:
        slope, intercept = (float(v) for v in np.polyfit(xs, ys, 1))
    rho = float(stats.spearman(xs[None], ys[None])[0]) if n >= 2 else math.nan
    if n < 3 or g < 3:
        return Trend(n, slope, intercept, rho, math.nan, math.nan, level, g)
    lo, hi = _cluster_spearman(xs, ys, groups, n_boot, level, seed)
    return Trend(n, slope, intercept, rho, lo, hi, level, g)
