"""What the overview page shows: the models and their state, the cache, and the findings in numbers."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from core.app.prepare import logits_cached
from core.app.views import load_logit_set
from core.config import AttackSpec, DataSpec, cache_dir, with_clean
from core.engine import analysis
from core.engine.logits import get_grid
from core.errors import LogitscopeError
from core.study.recipes import Recipe, is_trained


def _unavailable():
    raise LogitscopeError("not computed")


def model_table(models: dict[str, Recipe], data: DataSpec, attack: AttackSpec, grid: Sequence[float],
                eps: float, lab_names: Sequence[str] = ()) -> pd.DataFrame:
    """One row per model: how it was made, its accuracies (clean and at eps), and whether it is ready."""
    rows = []
    for name, r in models.items():
        train = r.spec.train
        row = {"model": name, "role": r.role, "method": "RobustBench" if r.zoo else train.method,
               "teacher": r.teacher.name if r.teacher else "", "manipulation": r.manipulation or "",
               "clean accuracy": np.nan, f"robust accuracy @ eps {eps:g}": np.nan, "mean max logit": np.nan,
               "status": "", "source": "lab run" if name in lab_names else "default study"}
        if not logits_cached(r, data, attack, grid):
            row["status"] = ("trained; logits for this attack not computed" if is_trained(r) else "not trained")
        else:
            rec = get_grid(_unavailable, r.key, data, attack, with_clean([eps]))
            clean, adv = rec[0.0], rec[float(eps)]
            row["clean accuracy"] = analysis.accuracy(clean.logits, clean.labels)
            row[f"robust accuracy @ eps {eps:g}"] = analysis.accuracy(adv.logits, adv.labels)
            row["mean max logit"] = float(clean.logits.max(dim=1).values.mean())
            row["status"] = "ready"
        rows.append(row)
    return pd.DataFrame(rows)


def cache_summary() -> pd.DataFrame:
    """Files and megabytes per part of the cache (models, logits, lab runs, maps, datasets)."""
    root = cache_dir()
    labels = {"models": "trained models (checkpoints)", "logits": "logits (clean and under attack)",
              "lab": "distillation lab run table", "embeddings": "UMAP maps"}
    rows = []
    if root.is_dir():
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            files = [f for f in sub.rglob("*") if f.is_file() and not f.name.endswith(".lock")]
            rows.append({"part": sub.name, "what": labels.get(sub.name, "datasets and other files"),
                         "files": len(files), "MB": round(sum(f.stat().st_size for f in files) / 1e6, 2)})
    return pd.DataFrame(rows, columns=["part", "what", "files", "MB"])


def findings(models: dict[str, Recipe], data: DataSpec, attack: AttackSpec, grid: Sequence[float],
             eps: float) -> list[str]:
    """The three findings with this cache's numbers; a finding whose models are not ready is left out."""
    out = []

    def ready(*names: str) -> bool:
        return all(n in models and logits_cached(models[n], data, attack, grid) for n in names)

    if ready("standard", "pgd-at"):
        b = load_logit_set({n: models[n] for n in ("standard", "pgd-at")}, data, attack, grid)
        s, a = (analysis.per_sample(b.at(n, 0.0), b.labels) for n in ("standard", "pgd-at"))
        out.append(f"**1. AT shrinks logits.** On clean test images the mean max logit falls from "
                   f"{s.max_logit.mean():.2f} (standard) to {a.max_logit.mean():.2f} (PGD-AT), the mean logit gap "
                   f"from {s.logit_gap.mean():.2f} to {a.logit_gap.mean():.2f}.")
        corr = analysis.rank_correlation(s.confidence, a.confidence)
        out.append(f"**2. They disagree on which samples are confident.** The rank correlation of the two models' "
                   f"confidences is only {corr['spearman']:.2f} (Spearman), {corr['kendall']:.2f} (Kendall); "
                   "1 would be the same ranking.")
    names = ("student:pgd-at:none", "student:pgd-at:shuffle_nonmax", "student:standard:none")
    if ready(*names) and eps > 0:
        b = load_logit_set({n: models[n] for n in names}, data, attack, grid)
        acc = {n: analysis.accuracy(b.at(n, eps), b.labels) for n in names}
        out.append(f"**3. Students inherit some robustness from the logits.** Distilled on clean images only, the "
                   f"student of PGD-AT keeps {acc[names[0]]:.0%} accuracy at epsilon {eps:g}, the student of the "
                   f"standard model {acc[names[2]]:.0%}; shuffling the teacher's incorrect-class order gives "
                   f"{acc[names[1]]:.0%}.")
    return out
