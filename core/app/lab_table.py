"""The distillation lab's run table: the Parquet file that keeps every run, and how people read it.

One row per run (`core.app.lab.run`), newest last, in `cache/lab/runs.parquet`, written whole with
`storage.atomic_write` under a lock. Rows recorded before replicates lack the evidence columns: they read
as one replicate (their seed) without an interval, and a table of old and new rows reads as one.

In the hosted demo every visitor's runs are their own: a row's `owner` is the visitor's session ("" for
the bundle's runs and for every run of a local app). A visitor sees the bundle's runs and their own
(`owner=` of `load_runs`), removes only their own, keeps at most VISITOR_RUNS, and the demo keeps at
most SHARED_RUNS visitors' runs in all (the oldest go first).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from core.config import cache_dir
from core.errors import LogitscopeError
from core.storage import atomic_write, cache_lock
from core.study.hyper import hyper

# the baselines of a run: distilled with its settings and seeds, without manipulation; the claim each
# difference (run minus baseline) is tested for, and its direction
BASELINES = {"untouched": ("the untouched teacher's student", "the manipulation costs robustness", -1),
             "standard": ("the standard teacher's student", "more robust than the standard teacher's student", +1)}


def table_path() -> Path:
    return cache_dir() / "lab" / "runs.parquet"


BASE_COLUMNS = ["run", "name", "dataset", "teacher", "manipulation", "temperature", "hard_weight", "fraction",
                "epochs", "seed", "norm", "steps", "clean_accuracy", "robust_accuracy", "order_agreement",
                "mean_max_logit", "mean_logit_gap", "max_logit_ks_to_teacher", "seconds", "created", "student_key",
                "spec"]  # every row has them (means over replicates where there are several)
EVIDENCE_COLUMNS = {  # added with replicates, and their values in rows recorded before: one replicate, no interval
    "replicates": 1, "seeds": None, "student_keys": None,  # JSON lists, one item per replicate
    "reliable_attack": None, "reliable_eps": np.nan,  # AutoAttack described in full, and its epsilon
    "robust_reliable": np.nan, "robust_lo": np.nan, "robust_hi": np.nan,  # its robust accuracy, 95% interval
    "replicate_results": None,  # JSON [{seed, key, clean_accuracy, pgd_accuracy {eps: acc}, reliable_accuracy}]
    "baseline_results": None,  # JSON [{role, name, keys, robust, difference, claim, verdict}]
    "owner": "",  # the demo visitor whose run it is; "" for the bundle's runs and a local app's
    "reused": None,  # True when every student was trained before the run (its time is then a re-evaluation)
}
BUNDLED = ""  # the owner of the rows nobody may remove in the demo
VISITOR_RUNS = 5  # runs one demo visitor may keep
SHARED_RUNS = 40  # visitors' runs the demo keeps in all
RUN_COLUMNS = BASE_COLUMNS + list(EVIDENCE_COLUMNS)


def _complete(runs: pd.DataFrame) -> pd.DataFrame:
    """Fill the columns that rows recorded before replicates lack: one replicate (their seed), no interval."""
    runs = runs.copy()
    for column, default in EVIDENCE_COLUMNS.items():
        if column not in runs.columns:
            runs[column] = default
    for column, default in EVIDENCE_COLUMNS.items():  # Parquet reads a missing text as NaN: make it None
        if default is None:
            runs[column] = runs[column].astype(object).where(runs[column].notna(), None)
    runs["owner"] = runs["owner"].fillna(BUNDLED).astype(str)
    runs["reused"] = pd.Series([None if v is None or (isinstance(v, float) and np.isnan(v)) else bool(v)
                                for v in runs["reused"]], index=runs.index, dtype=object)
    runs["replicates"] = pd.to_numeric(runs["replicates"], errors="coerce").fillna(1).astype(int)
    runs["seeds"] = [s if isinstance(s, str) and s else json.dumps([int(seed)])
                     for s, seed in zip(runs["seeds"], runs["seed"])]
    return runs[RUN_COLUMNS + [c for c in runs.columns if c not in RUN_COLUMNS]]


def load_runs(dataset: str | None = None, owner: str | None = None) -> pd.DataFrame:
    """All recorded runs (newest last), optionally of one dataset; with `owner` (a demo visitor) only the
    bundle's runs and theirs. An unreadable table raises LogitscopeError with what to do."""
    path = table_path()
    if not path.is_file():
        return _complete(pd.DataFrame(columns=BASE_COLUMNS))
    try:
        runs = pd.read_parquet(path)
    except Exception as exc:  # a truncated or foreign file: the runs are lost, the app goes on
        raise LogitscopeError(f"The lab's run table {path} is unreadable ({type(exc).__name__}): delete it "
                              "to start a new table.") from exc
    if not set(BASE_COLUMNS) <= set(runs.columns):
        raise LogitscopeError(f"The lab's run table {path} lacks columns "
                              f"{sorted(set(BASE_COLUMNS) - set(runs.columns))}: delete it to start a new table.")
    if dataset is not None:
        runs = runs[runs["dataset"] == dataset]
    runs = _complete(runs.reset_index(drop=True))
    if owner is not None:
        runs = runs[runs["owner"].isin([BUNDLED, owner])].reset_index(drop=True)
    return runs


def _save_runs(runs: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    runs.to_parquet(buffer, index=False)
    atomic_write(table_path(), buffer.getvalue())


def record(row: dict) -> pd.DataFrame:
    """Add a run's row to the table and return the table. A row of the same run id and owner is replaced;
    a visitor's row (the demo) makes the oldest visitors' rows go beyond SHARED_RUNS."""
    owner = row.get("owner") or BUNDLED
    with cache_lock(str(table_path()) + ".lock"):
        runs = load_runs()
        runs = runs[(runs["run"] != row["run"]) | (runs["owner"] != owner)]
        new = _complete(pd.DataFrame([{**row, "owner": owner}], columns=[c for c in RUN_COLUMNS if c in row or
                                                                         c == "owner"]))
        runs = pd.concat([runs, new], ignore_index=True) if len(runs) else new
        visitors = runs.index[runs["owner"] != BUNDLED]
        if owner != BUNDLED and len(visitors) > SHARED_RUNS:
            runs = runs.drop(visitors[:len(visitors) - SHARED_RUNS]).reset_index(drop=True)
        _save_runs(runs)
    return runs


def owned(runs: pd.DataFrame, owner: str | None) -> pd.Series:
    """Which rows `owner` may remove: all of them in a local app (None), only their own in the demo."""
    return pd.Series(True, index=runs.index) if owner is None else runs["owner"] == owner


def delete_runs(run_ids: Sequence[str], owner: str | None = None) -> int:
    """Remove runs from the table (their checkpoints stay in the cache); with `owner` (a demo visitor) only
    their own rows, never the bundle's. Returns how many rows went."""
    if not table_path().is_file():
        return 0
    with cache_lock(str(table_path()) + ".lock"):
        runs = load_runs()
        gone = runs["run"].isin(list(run_ids)) & owned(runs, owner)
        _save_runs(runs[~gone].reset_index(drop=True))
    return int(gone.sum())


def _loads(text) -> list | dict | None:
    return json.loads(text) if isinstance(text, str) and text else None


def interval_text(d: dict | None, spec: str = ".3f") -> str | None:
    """'0.512 [0.470, 0.555]' of an `Interval.to_dict()`; None without one (a run recorded before intervals)."""
    if not d:
        return None
    lo, hi = d["interval"]
    return f"{d['estimate']:{spec}} [{lo:{spec}}, {hi:{spec}}]"


def reliable_label(norm: str, eps: float) -> str:
    """How a column names the reliable attack, e.g. 'AutoAttack @0.1' ('L2 AutoAttack @0.5')."""
    return f"{'' if norm == 'linf' else 'L2 '}AutoAttack @{eps:g}"


def _label(runs: pd.DataFrame) -> str:
    known = runs[runs["reliable_eps"].notna()]
    labels = {reliable_label(n, e) for n, e in zip(known["norm"], known["reliable_eps"])}
    return labels.pop() if len(labels) == 1 else "AutoAttack at the findings' eps"


def _baseline(r, role: str) -> dict | None:
    return next((b for b in _loads(r.get("baseline_results")) or [] if b["role"] == role), None)


def summary(row: pd.Series) -> dict:
    """One run's headline numbers as text, for the page's metrics: keys label (the reliable attack, short),
    attack (in full), robust, difference (to the untouched teacher's student), verdict; None where the row
    has none (recorded before intervals)."""
    known = not pd.isna(row.get("reliable_eps", np.nan))
    ref = _baseline(row, "untouched") or {}
    return {"label": reliable_label(row["norm"], row["reliable_eps"]) if known else "AutoAttack",
            "attack": row.get("reliable_attack"),
            "robust": interval_text({"estimate": row["robust_reliable"], "interval": [row["robust_lo"],
                                                                                     row["robust_hi"]]})
            if known else None,
            "difference": interval_text(ref.get("difference"), "+.3f"), "verdict": ref.get("verdict")}


def display_table(runs: pd.DataFrame, owner: str | None = None) -> pd.DataFrame:
    """The run table as people read it, newest run first: robust accuracy under AutoAttack with its 95%
    interval beside the baselines', the paired difference to the untouched teacher's student and its
    verdict, then one PGD accuracy column per epsilon (upper bounds). Every accuracy names its attack. With
    `owner` (a demo visitor) a first column says whose each run is: the bundle's (read-only) or yours."""
    runs = _complete(runs)
    aa = _label(runs)
    pgd = {f"PGD-{s}" for s in runs["steps"]}
    pgd_name = pgd.pop() if len(pgd) == 1 else "PGD"
    rows = list(runs.iterrows())
    out = pd.DataFrame({
        "name": runs["name"], "teacher": runs["teacher"], "manipulation": runs["manipulation"],
        "T": runs["temperature"], "hard weight": runs["hard_weight"], "fraction": runs["fraction"],
        "epochs": runs["epochs"], "seeds": [", ".join(str(s) for s in json.loads(x)) for x in runs["seeds"]],
        "replicates": runs["replicates"],
        f"robust acc. ({aa}), 95% interval": [
            None if pd.isna(r["robust_reliable"]) else interval_text(
                {"estimate": r["robust_reliable"], "interval": [r["robust_lo"], r["robust_hi"]]}) for _, r in rows],
    })
    for role, (name, claim, _) in BASELINES.items():
        out[f"{name} ({aa})"] = [interval_text((_baseline(r, role) or {}).get("robust")) for _, r in rows]
    ref = BASELINES["untouched"][0]
    out[f"difference to {ref} ({aa}), paired 95% interval"] = [
        interval_text((_baseline(r, "untouched") or {}).get("difference"), "+.3f") for _, r in rows]
    out[f"{BASELINES['untouched'][1]}? (verdict)"] = [(_baseline(r, "untouched") or {}).get("verdict")
                                                      for _, r in rows]
    out["clean acc"] = runs["clean_accuracy"]
    rob = [json.loads(s) for s in runs["robust_accuracy"]]
    for e in sorted({e for d in rob for e in d if float(e) > 0}, key=float):
        out[f"acc @ eps {e} ({pgd_name}, upper bound)"] = [d.get(e, np.nan) for d in rob]
    out["order agreement"] = runs["order_agreement"]
    out["mean max logit"] = runs["mean_max_logit"]
    out["max-logit KS to teacher"] = runs["max_logit_ks_to_teacher"]
    out["seconds"] = runs["seconds"]
    out["students"] = ["" if r is None else "reused" if r else "trained" for r in runs["reused"]]
    out["PGD attack"] = [f"{n} PGD-{s}" for n, s in zip(runs["norm"], runs["steps"])]
    out["reliable attack"] = runs["reliable_attack"]
    out["run"] = runs["run"]
    if owner is not None:
        out.insert(0, "whose", ["yours" if o == owner else "bundled (read-only)" for o in runs["owner"]])
    return out.iloc[::-1].reset_index(drop=True)


def interval_frame(runs: pd.DataFrame, last: int = 10) -> pd.DataFrame:
    """Robust accuracy under AutoAttack with its 95% interval of the `last` runs that have it, each beside its
    baselines, for one chart. Columns: run (its name, and its replicates), model, estimate, lo, hi, attack."""
    rows = []
    runs = _complete(runs)
    for _, r in runs[runs["robust_reliable"].notna()].tail(last).iterrows():
        label = r["name"] + (f" ({r['replicates']} seeds)" if r["replicates"] > 1 else "")
        if r["norm"] != "linf" or int(r["steps"]) != hyper(r["dataset"]).eval_steps:
            label += f" ({r['norm']} PGD-{r['steps']})"
        rows.append({"run": label, "model": "the run's student", "estimate": r["robust_reliable"],
                     "lo": r["robust_lo"], "hi": r["robust_hi"], "attack": r["reliable_attack"]})
        for b in _loads(r["baseline_results"]) or []:
            lo, hi = b["robust"]["interval"]
            rows.append({"run": label, "model": b["name"], "estimate": b["robust"]["estimate"], "lo": lo, "hi": hi,
                         "attack": r["reliable_attack"]})
    return pd.DataFrame(rows, columns=["run", "model", "estimate", "lo", "hi", "attack"])


def accuracy_long(runs: pd.DataFrame, last: int = 10) -> pd.DataFrame:
    """Accuracy versus epsilon (PGD, an upper bound) of the `last` runs, for one chart. Columns: model (run
    name), eps, accuracy."""
    rows = []
    for _, r in runs.tail(last).iterrows():
        default_attack = r["norm"] == "linf" and int(r["steps"]) == hyper(r["dataset"]).eval_steps
        label = r["name"] if default_attack else f"{r['name']} ({r['norm']} PGD-{r['steps']})"
        reps = int(r["replicates"]) if "replicates" in r and not pd.isna(r["replicates"]) else 1
        label += f" (mean of {reps} seeds)" if reps > 1 else ""
        for e, acc in json.loads(r["robust_accuracy"]).items():
            rows.append({"model": label, "eps": float(e), "accuracy": float(acc)})
    return pd.DataFrame(rows, columns=["model", "eps", "accuracy"])
