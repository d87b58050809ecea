"""The "Across models" page without Streamlit: every model of a dataset as one point, and the tables beside it.

`core.study.census` reads each model's numbers from the cache; this module turns its frame into what the
page shows: the points (x = a clean-logit statistic, y = robust accuracy, each with its interval and the
attack that made it), the axis title, the trend's sentence, the models that cannot be plotted with the
command that computes them, the RobustBench comparison with the published numbers, the CSV, and the
settings of a link that opens a picked model on the other pages.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from core.app.palette import display_name
from core.study.census import RANK_CORR, Trend
from core.study.hyper import hyper
from core.study.recipes import Recipe
from core.study.sweep import method_of

STATISTICS = {"mean_max_logit": "mean max logit", "mean_logit_gap": "mean logit gap (max minus second-largest)",
              "mean_confidence": "mean confidence (max softmax)",
              RANK_CORR: "rank correlation of confidences with the reference"}
COLOR_BY = {"method": "method", "source": "source"}
METHODS = ("standard", "pgd-at", "trades", "fast-at", "student", "zoo")
PUBLISHED_NOTE = ("RobustBench's published numbers are on the full 10,000-image test split under AutoAttack's "
                  "standard version; Logitscope's are on its evaluation split, under the attack named in each row.")


def x_label(x: str, reference: str | None = None) -> list[str]:
    """The x axis's title, two short lines (a phone's width): the statistic, and on clean test images (the
    reference named for the rank correlation)."""
    if x == RANK_CORR:
        return ["rank correlation (Spearman) of confidences", f"with {display_name(reference or '?')}, clean images"]
    return [STATISTICS[x], "clean test images"]


def short_attack(robust_attack: str | None) -> str:
    """"AutoAttack (fast)", "AutoAttack (standard)" or "PGD-20: an upper bound" from census's full attack text
    ("" when none)."""
    if not robust_attack:
        return ""
    rest = robust_attack.partition(" ")[2]  # after the norm
    if rest.startswith("AutoAttack"):
        return "AutoAttack (standard)" if rest.startswith("AutoAttack standard") else "AutoAttack (fast)"
    return rest.split(" ", 1)[0] + ": an upper bound"


def y_label(points: pd.DataFrame, eps: float) -> list[str]:
    """The y axis's title in short lines (it runs along the plot's height): robust accuracy at eps, then each
    attack with the number of points it made, e.g. "AutoAttack (fast): 10 models", "PGD-20, an upper bound: 4"."""
    counts = points["attack"].value_counts()
    made = [f"{a.replace(':', ',')}: {n} model{'' if n == 1 else 's'}" for a, n in counts.items()]
    return [f"robust accuracy at eps {eps:g}", *made]


def _text(v: float, lo: float, hi: float) -> str:
    if not np.isfinite(v):
        return "not computed"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) and np.isfinite(hi) else f"{v:.3f}"


def points(frame: pd.DataFrame, x: str) -> pd.DataFrame:
    """The plotted models (census rows with clean and robust numbers, and a value of x): one row a point.

    Columns: name (key), model (display name), method, source, train_eps (NaN: unknown), size_eps (what
    the size encodes: unknown as 0), train_eps_text, seed_text, arch_text, x, x_lo, x_hi, x_text, y, y_lo,
    y_hi, y_text, attack (short), robust_attack (in full).
    """
    if x not in STATISTICS:
        raise ValueError(f"unknown statistic {x!r}: one of {', '.join(STATISTICS)}")
    rows = frame[frame["plotted"].astype(bool) & frame[x].notna()]
    te = rows["train_eps"].astype(float)
    out = pd.DataFrame({
        "name": rows["name"], "model": rows["name"].map(display_name), "method": rows["method"],
        "source": rows["source"], "train_eps": te, "size_eps": te.fillna(0.0),
        "train_eps_text": [f"{e:g}" if np.isfinite(e) else "unknown" for e in te],
        "seed_text": ["n/a" if pd.isna(s) else str(int(s)) for s in rows["seed"]],
        "arch_text": [a if isinstance(a, str) and a else "unknown" for a in rows["arch"]],
        "x": rows[x].astype(float), "x_lo": rows[f"{x}_lo"].astype(float), "x_hi": rows[f"{x}_hi"].astype(float),
        "y": rows["robust_accuracy"].astype(float), "y_lo": rows["robust_accuracy_lo"].astype(float),
        "y_hi": rows["robust_accuracy_hi"].astype(float),
        "attack": rows["robust_attack"].map(short_attack), "robust_attack": rows["robust_attack"],
    })
    out["x_text"] = [_text(*v) for v in zip(out.x, out.x_lo, out.x_hi)]
    out["y_text"] = [_text(*v) for v in zip(out.y, out.y_lo, out.y_hi)]
    return out.reset_index(drop=True)


def trend_line(t: Trend, pts: pd.DataFrame) -> pd.DataFrame:
    """Two points of the least-squares line across the plotted x range (empty when there is no line)."""
    if not np.isfinite(t.slope) or pts.empty:
        return pd.DataFrame(columns=["x", "y"])
    xs = np.array([pts["x"].min(), pts["x"].max()])
    return pd.DataFrame({"x": xs, "y": t.slope * xs + t.intercept})


def trend_sentence(t: Trend, x: str) -> str:
    """What the trend says, plainly: rho with its interval over recipes, and whether that is resolved."""
    what = STATISTICS[x].split(" (")[0]
    groups = t.n if t.groups is None else t.groups
    among = "" if groups >= t.n else f" of {groups} recipe{'' if groups == 1 else 's'}"
    if t.n < 3 or groups < 3:
        return (f"Not resolved with {t.n} model{'' if t.n == 1 else 's'}{among}: a trend across models needs at least "
                "three recipes with both numbers.")
    how = "models resampled" if groups >= t.n else "recipes resampled, the seeds of one recipe together"
    rho = f"Spearman's rho {t.spearman:+.2f} [{t.lo:+.2f}, {t.hi:+.2f}] ({t.level:.0%} interval, {how})"
    if t.resolved:
        side = "higher" if t.lo > 0 else "lower"
        return (f"Resolved across {t.n} models{among}: a higher {what} goes with {side} robust accuracy; {rho} "
                "excludes 0.")
    return f"Not resolved with {t.n} models{among}: {rho} includes 0, so these models do not say which way it goes."


def command(recipe: Recipe, dataset: str, source: str) -> str:
    """The command that computes a model's logits into the cache (a sweep resumes where it stopped).

    source: census's ("default study", "sweep", "RobustBench", "other").
    """
    if recipe.role == "zoo":
        _, threat, name = recipe.zoo
        return f"python -m core precompute --dataset {dataset} --models none --zoo {name} --threat {threat}"
    if source != "sweep":
        return f"python -m core precompute --dataset {dataset} --models {recipe.name}"
    teacher = recipe.teacher if recipe.role == "student" and recipe.teacher is not None else recipe
    t = teacher.spec.train
    cmd = f"python -m core sweep --dataset {dataset} --methods {method_of(teacher)}"
    cmd += f" --train-eps {t.attack.eps:g}" if t.attack is not None else ""
    cmd += f" --seeds {t.seed}"
    cmd += f" --archs {teacher.spec.arch}" if teacher.spec.arch != hyper(dataset).arch else ""
    return cmd + (f" --students {recipe.manipulation}" if recipe.role == "student" else "")


def autoattack_hint(dataset: str, eps: float) -> str:
    """How to replace PGD's upper bounds at eps with AutoAttack: the evidence of precompute, or a sweep's flag."""
    return (f"To measure them with AutoAttack: `python -m core precompute --dataset {dataset} --models all --evidence "
            f"--reliable-eps {eps:g}` (the default study), or the sweep's command with `--reliable-eps {eps:g}`.")


def not_plotted(frame: pd.DataFrame, recipes: Mapping[str, Recipe], dataset: str) -> pd.DataFrame:
    """The models left off the chart, why, and what to run. Columns: name, model, why, run."""
    rows = []
    for _, r in frame[~frame["plotted"].astype(bool)].iterrows():
        why = ("no clean logits in the cache" if not r["clean_cached"] else
               f"no logits under attack at eps {r['eps']:g} (neither AutoAttack nor the PGD grid)")
        rows.append({"name": r["name"], "model": display_name(r["name"]), "why": why,
                     "run": command(recipes[r["name"]], dataset, r["source"]) if r["name"] in recipes else ""})
    return pd.DataFrame(rows, columns=["name", "model", "why", "run"])


def zoo_table(frame: pd.DataFrame) -> pd.DataFrame:
    """RobustBench's models: published clean and AutoAttack accuracies beside what Logitscope measured."""
    rows = frame[frame["source"] == "RobustBench"]
    return pd.DataFrame({
        "model": rows["name"].map(display_name), "threat": rows["threat"],
        "published clean": rows["published_clean"].astype(float),
        "published AutoAttack": rows["published_autoattack"].astype(float),
        "published eps": rows["published_eps"].astype(float),
        "measured clean": [_text(*v) for v in zip(rows.clean_accuracy, rows.clean_accuracy_lo, rows.clean_accuracy_hi)],
        "measured robust": [_text(*v) for v in zip(rows.robust_accuracy, rows.robust_accuracy_lo,
                                                    rows.robust_accuracy_hi)],
        "measured at eps": rows["eps"].astype(float), "attack": rows["robust_attack"].fillna("not computed"),
    }).reset_index(drop=True)


def export(frame: pd.DataFrame) -> pd.DataFrame:
    """The CSV behind the chart: every census column, one row per model, with its display name second."""
    out = frame.copy()
    out.insert(1, "display_name", out["name"].map(display_name))
    return out


def selected_model(event: Any, param: str = "pick", field: str = "name") -> str | None:
    """The model name a point selection holds (the first), or None.

    event: what `st.altair_chart(..., on_select=...)` returns, {"selection": {param: [{field: ...}]}}.
    """
    def get(obj: Any, key: str) -> Any:
        if isinstance(obj, Mapping):
            return obj.get(key)
        return getattr(obj, key, None)

    sel = get(get(event, "selection"), param)
    if isinstance(sel, Mapping) and field in sel:  # some renderers send {"name": ["pgd-at"]}
        sel = [{field: v} for v in np.atleast_1d(sel[field])]
    if not isinstance(sel, (list, tuple)) or not sel:
        return None
    value = get(sel[0], field)
    return str(value) if value is not None else None


def link_settings(picked: str, reference: str | None, names: list[str], dataset: str, norm: str, steps: int,
                  eps: float) -> dict[str, dict]:
    """The settings (named as pages/_state.py keeps them in the URL) that open `picked` on each other page.

    The picked model comes with a partner, the reference or else the first other model (the differences
    page compares two). Keys are the pages' URL paths; values are plain Python values (the page encodes them).
    """
    partner = reference if reference and reference != picked else next((n for n in names if n != picked), None)
    models = [picked] + ([partner] if partner else [])
    shared = {"ds": dataset, "m": models, "norm": norm, "steps": steps, "eps": eps}
    out = {"distributions": shared}
    if partner:
        out["differences"] = {**shared, "a": picked, "b": partner}
    return out
