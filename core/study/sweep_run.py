"""Running a sweep and summarising it: `python -m core sweep`.

`run` remembers the sweep's recipes (the app lists them from then on) and hands them to
`core.study.fanout.run` with the evidence plan on: every model is trained, evaluated clean and under PGD
over the grid, and under AutoAttack at the findings' epsilon (and `reliable_eps`). `summary` reads the
numbers back from the cache (`core.study.census`), with intervals, for the table and the JSON file.

Example:
    >>> out = run(SweepGrid("digits", ("standard", "pgd-at"), (0.1, 0.2), (0, 1)), LocalExecutor())
    >>> summary(out.grid_spec, out.recipes)["models"][0]["robust"]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from core.config import AttackSpec, DataSpec
from core.engine import stats
from core.study import census as census_mod
from core.study import fanout
from core.study.executors import Executor
from core.study.hyper import eval_attack, eval_data
from core.study.precompute import Outcome, Progress
from core.study.recipes import Recipe
from core.study.report import LEVEL, N_BOOT
from core.study.sweep import SweepGrid, remember_sweep, sweep_recipes

STATISTICS = ("mean_max_logit", "mean_logit_gap", "mean_confidence")


@dataclass
class SweepOutcome:
    grid: SweepGrid
    recipes: list[Recipe]
    outcome: Outcome


def run(grid: SweepGrid, executor: Executor, eps: Sequence[float] | None = None, steps: int | None = None,
        device: str = "cpu", data_dir: str | None = None, progress: Progress | None = None,
        cancel: Callable[[], bool] | None = None, reliable: str = "fast",
        reliable_eps: Sequence[float] | None = None) -> SweepOutcome:
    """Train and evaluate every model of the sweep not yet in the cache; see the module docstring."""
    recipes = sweep_recipes(grid)
    remember_sweep(grid.dataset, recipes)
    out = fanout.run(executor, grid.dataset, recipes, eps, "linf", steps, device, data_dir, progress, cancel,
                     evidence=True, reliable=reliable, reliable_eps=reliable_eps)
    return SweepOutcome(grid, recipes, out)


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _estimate(row, name: str) -> dict:
    return {"estimate": _num(row[name]), "interval": [_num(row[f"{name}_lo"]), _num(row[f"{name}_hi"])]}


def _robust(recipe: Recipe, data: DataSpec, pgd: AttackSpec, eps: float, reliable: str) -> dict:
    """Robust accuracy at eps with its interval over test images and the attack that made it (None: not cached)."""
    rec, attack = census_mod.robust_entry(recipe, data, pgd, eps, reliable)
    if rec is None:
        return {"estimate": None, "interval": [None, None], "attack": None, "reliable": False}
    correct = (rec.logits.argmax(1) == rec.labels).numpy().astype(np.float64)
    iv = stats.interval([correct], np.mean, N_BOOT, LEVEL)
    return {"estimate": iv.estimate, "interval": [iv.lo, iv.hi], "attack": census_mod.attack_text(attack),
            "reliable": attack.reliable}


def summary(dataset: str, recipes: Sequence[Recipe], outcome: Outcome, steps: int | None = None,
            reliable: str = "fast", data_dir: str | None = None) -> dict:
    """Every model's statistics, accuracies and intervals, read from the cache (JSON-ready).

    Robust accuracy at each epsilon of the grid comes from AutoAttack where it was computed (the findings'
    epsilon, `reliable_eps`), else from PGD and is marked as an upper bound (`attack` says which).
    Trends: Spearman's rho across the models between each statistic and robust accuracy at the findings'
    epsilon, with its interval (recipes resampled, the seeds of one recipe together) and whether it is resolved.
    """
    named = {r.name: r for r in recipes}
    grid = [e for e in outcome.grid if e > 0]
    finding = outcome.evidence.eps if outcome.evidence is not None else (grid[0] if grid else None)
    base = census_mod.census(named, dataset, "linf", steps, finding, reliable, data_dir=data_dir)
    data, pgd = eval_data(dataset), eval_attack(dataset, "linf", steps)
    models = []
    for _, row in base.iterrows():
        r = named[row["name"]]
        entry = {"name": row["name"], "key": row["key"], "method": row["method"], "train_eps": _num(row["train_eps"]),
                 "seed": None if pd.isna(row["seed"]) else int(row["seed"]),
                 "arch": row["arch"], "teacher": r.teacher.name if r.teacher else None,
                 "manipulation": r.manipulation, "clean_accuracy": _estimate(row, "clean_accuracy")}
        entry.update({s: _estimate(row, s) for s in STATISTICS})
        entry["robust"] = {f"{e:g}": _robust(r, data, pgd, e, reliable) for e in grid}
        models.append(entry)
    trends = {}
    for s in STATISTICS:
        t = census_mod.trend(base[base["plotted"]], s)
        trends[s] = {"models": t.n, "recipes": t.groups, "spearman": _num(t.spearman), "interval": [_num(t.lo), _num(t.hi)],
                     "verdict": t.verdict, "robust_accuracy_at": finding}
    return {"dataset": dataset, "pgd_attack": outcome.attack.describe(), "eps": grid, "findings_eps": finding,
            "reliable_attack": outcome.evidence.describe() if outcome.evidence is not None else None,
            "interval_level": census_mod.LEVEL, "models": models, "trends": trends,
            "computed_units": len(outcome.computed), "cached_units": len(outcome.skipped),
            "trained": list(outcome.trained)}
