"""The reproduction of the paper's three findings as one report (a JSON-able dict) and its table.

`reproduce` trains (or reuses) every default recipe for each seed, evaluates it clean and under
PGD over the epsilon grid through the logits cache, and gathers the statistics; `format_report`
turns the report into the readable table and the three findings the command line prints.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
import torch

from core.config import AttackSpec, check_eps, with_clean
from core.engine import analysis
from core.engine.logits import get_grid
from core.engine.models import load_checkpoint
from core.engine.train import TrainProgress
from core.study.hyper import eval_attack, eval_data, hyper
from core.study.recipes import Recipe, default_recipes, ensure_model

Progress = Callable[[str, float], None]  # (what is running, fraction done in [0, 1])

CORRELATION_PAIRS = (("standard", "pgd-at"), ("standard", "trades"), ("pgd-at", "trades"))


def eps_label(eps: float) -> str:
    return f"{eps:g}"


def _model_entry(recipe: Recipe, seed: int, ckpt: str, grid: dict, teacher_clean=None) -> dict:
    clean = grid[0.0]
    stats = analysis.per_sample(clean.logits, clean.labels)
    entry = {
        "name": recipe.name, "role": recipe.role, "method": recipe.spec.train.method,
        "teacher": recipe.teacher.name if recipe.teacher else None, "manipulation": recipe.manipulation,
        "seed": seed, "key": recipe.key, "checkpoint": ckpt,
        "clean_accuracy": analysis.accuracy(clean.logits, clean.labels),
        "robust_accuracy": {eps_label(e): analysis.accuracy(r.logits, r.labels) for e, r in sorted(grid.items())},
        "mean_max_logit": float(stats.max_logit.mean()), "mean_logit_gap": float(stats.logit_gap.mean()),
        "mean_margin": float(stats.margin.mean()), "mean_confidence": float(stats.confidence.mean()),
        "mean_entropy": float(stats.entropy.mean()),
    }
    if teacher_clean is not None:
        entry["incorrect_order_agreement"] = float(analysis.incorrect_class_order_agreement(
            teacher_clean.logits, clean.logits, clean.labels).mean())
    return entry


def reproduce(dataset: str = "digits", seeds: Sequence[int] = (0,), eps_grid: Sequence[float] | None = None,
              attack: AttackSpec | None = None, device: str | torch.device = "cpu", data_dir: str | None = None,
              progress: Progress | None = None, recipes: Callable[[str, int], list[Recipe]] = default_recipes) -> dict:
    """Train or reuse every recipe for every seed, evaluate clean and under PGD, return the report."""
    start = time.perf_counter()
    attack = attack or eval_attack(dataset)
    grid = with_clean(eps_grid if eps_grid is not None else hyper(dataset).eps_grid)
    for e in grid:
        check_eps(e, attack.norm)
    test = eval_data(dataset)  # all test images, except for large datasets
    say = progress or (lambda what, frac: None)
    models, correlations = [], []
    for seed in seeds:
        clean_by_name = {}
        for recipe in recipes(dataset, seed):
            label = f"seed {seed} {recipe.name}"

            def on_train(p: TrainProgress, label=label):
                say(f"train {label}", p.fraction)

            ckpt = ensure_model(recipe, device, on_train, data_dir=data_dir,
                                on_start=lambda r, s=seed: say(f"train seed {s} {r.name}", 0.0))
            records = get_grid(lambda p=ckpt, k=recipe.key: load_checkpoint(p, device, k), recipe.key, test, attack,
                               grid, device,
                               on_batch=lambda d, n, label=label: say(f"attack {label}", d / n), data_dir=data_dir)
            clean_by_name[recipe.name] = records[0.0]
            teacher_clean = clean_by_name.get(recipe.teacher.name) if recipe.teacher else None
            models.append(_model_entry(recipe, seed, str(ckpt), records, teacher_clean))
            if recipe.teacher is not None and teacher_clean is not None:
                pairs = [(recipe.teacher.name, recipe.name)]
            else:
                pairs = [(a, b) for a, b in CORRELATION_PAIRS if b == recipe.name and a in clean_by_name]
            for a, b in pairs:
                conf = [analysis.per_sample(clean_by_name[n].logits, clean_by_name[n].labels).confidence for n in (a, b)]
                correlations.append({"a": a, "b": b, "seed": seed, **analysis.rank_correlation(*conf)})
    return {"dataset": dataset, "eps": grid, "attack": attack.to_dict(), "seeds": list(seeds),
            "seconds": time.perf_counter() - start, "models": models, "confidence_rank_correlation": correlations}


def _agg(values: list[float], fmt: str) -> str:
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(float(np.mean(values)), fmt)}±{format(float(np.std(values)), fmt)}"


def _mean(report: dict, name: str, field: str, eps: str | None = None) -> float:
    vals = [m[field][eps] if eps else m[field] for m in report["models"] if m["name"] == name]
    return float(np.mean(vals)) if vals else float("nan")


def format_report(report: dict) -> str:
    """The table (mean±std over seeds) and the three findings, as plain text."""
    names = list(dict.fromkeys(m["name"] for m in report["models"]))
    eps = [eps_label(e) for e in report["eps"] if e > 0]
    head = ["model", "clean"] + [f"eps {e}" for e in eps] + ["max logit", "gap", "conf", "order"]
    rows = []
    for name in names:
        ms = [m for m in report["models"] if m["name"] == name]
        order = [m["incorrect_order_agreement"] for m in ms if "incorrect_order_agreement" in m]
        rows.append([name, _agg([m["clean_accuracy"] for m in ms], ".3f")]
                    + [_agg([m["robust_accuracy"][e] for m in ms], ".3f") for e in eps]
                    + [_agg([m[f] for m in ms], ".2f") for f in ("mean_max_logit", "mean_logit_gap")]
                    + [_agg([m["mean_confidence"] for m in ms], ".3f"), _agg(order, ".2f") if order else "-"])
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    out = [f"Logitscope reproduction on {report['dataset']}: {len(report['seeds'])} seed(s), "
           f"{report['attack']['norm']} PGD-{report['attack']['steps']}, {report['seconds']:.1f} s",
           "Accuracies on the clean test split and under PGD at each eps; statistics on clean inputs; "
           "'order' = Kendall tau of the incorrect-class order against the teacher.", "",
           line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
    out += ["", "Findings:"]
    s, a = "standard", "pgd-at"
    if s in names and a in names:
        out.append(f" 1. AT shrinks logits: mean max logit {_mean(report, s, 'mean_max_logit'):.2f} (standard) -> "
                   f"{_mean(report, a, 'mean_max_logit'):.2f} (PGD-AT); mean logit gap "
                   f"{_mean(report, s, 'mean_logit_gap'):.2f} -> {_mean(report, a, 'mean_logit_gap'):.2f}.")
        cors = [c for c in report["confidence_rank_correlation"] if (c["a"], c["b"]) == (s, a)]
        if cors:
            out.append(f" 2. They disagree on which samples are confident: Spearman "
                       f"{np.mean([c['spearman'] for c in cors]):.2f}, Kendall {np.mean([c['kendall'] for c in cors]):.2f} "
                       "between the standard and PGD-AT confidences (1 would be the same ranking).")
    students = [n for n in names if n.startswith(f"student:{a}:")]
    mid = eps[len(eps) // 2 - 1] if eps else None
    if students and mid:
        parts = ", ".join(f"{n.split(':')[-1]} {_mean(report, n, 'robust_accuracy', mid):.3f}" for n in students)
        ref = f"student:{s}:none"
        base = f"; student of the standard teacher {_mean(report, ref, 'robust_accuracy', mid):.3f}" if ref in names else ""
        out.append(f" 3. Robust accuracy at eps {mid} of students of the PGD-AT teacher, by manipulation: {parts}{base}.")
    return "\n".join(out)
