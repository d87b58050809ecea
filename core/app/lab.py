"""The distillation lab: "what if" runs of finding 3, and the table that keeps them.

A run distils a student from a teacher's manipulated clean logits (core.engine.distill), evaluates it over
the epsilon grid through the logits cache, and appends one row to a Parquet table under the cache
(`cache/lab/runs.parquet`), so runs survive page changes and restarts and line up side by side.
A run whose spec was trained before reuses the checkpoint: only the evaluation is repeated.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from core.app.jobs import JobContext, format_seconds
from core.config import AttackSpec, DataSpec, cache_dir, stable_key, with_clean
from core.engine import analysis
from core.engine.logits import get_grid
from core.engine.models import load_checkpoint
from core.engine.train import TrainProgress
from core.errors import LogitscopeError
from core.storage import atomic_write, cache_lock, report_corrupt
from core.study.hyper import eval_data, hyper
from core.study.recipes import Recipe, default_recipes, ensure_model, is_trained, student_recipe, teacher_recipes

STUDY_SEED = 0  # the seed of the default study, whose teachers and baselines the lab compares against


@dataclass(frozen=True)
class LabSpec:
    """One what-if run: a teacher (by name), a manipulation of its non-max logits, and its settings."""

    dataset: str = "digits"
    teacher: str = "pgd-at"
    manipulation: str = "none"
    temperature: float = 4.0
    hard_weight: float = 0.0
    fraction: float = 1.0
    epochs: int = 20
    seed: int = 0

    def teacher_recipe(self) -> Recipe:
        """The study's teacher (study seed 0): `seed` is the student's, the teacher stays the same."""
        teachers = {r.name: r for r in teacher_recipes(self.dataset, STUDY_SEED)}
        if self.teacher not in teachers:
            raise LogitscopeError(f"Unknown teacher {self.teacher!r}: choose one of {', '.join(teachers)}.")
        return teachers[self.teacher]

    def recipe(self) -> Recipe:
        """The student's recipe, named after the settings that differ from the dataset's defaults."""
        if not 1 <= int(self.epochs) <= 200:
            raise LogitscopeError(f"epochs must be between 1 and 200 in the lab, got {self.epochs}.")
        r = student_recipe(self.teacher_recipe(), self.manipulation, self.temperature, self.hard_weight,
                           self.fraction, int(self.epochs), self.seed)
        return replace(r, name=self.name())

    def name(self) -> str:
        h = hyper(self.dataset)
        extra = [f"{k}={v:g}" for k, v, d in (("T", self.temperature, h.temperature), ("hard", self.hard_weight, 0),
                                              ("frac", self.fraction, 1), ("epochs", self.epochs, h.epochs),
                                              ("seed", self.seed, 0)) if v != d]
        return " ".join([f"lab:{self.teacher}:{self.manipulation}", *extra])


def default_spec(dataset: str = "digits") -> LabSpec:
    h = hyper(dataset)
    return LabSpec(dataset=dataset, temperature=h.temperature, epochs=h.epochs)


def baselines(teacher: Recipe, seed: int | None = None) -> list[Recipe]:
    """Reference students from the default study for a teacher.

    The teacher's unmanipulated student (if the study has one), the label-only student (no teacher
    logits at all) and the standard teacher's student: the robustness a manipulation keeps lies
    between the first and the last two.
    """
    out = []
    for r in default_recipes(teacher.spec.dataset, STUDY_SEED if seed is None else seed):
        if r.role != "student":
            continue
        if (r.teacher.name == teacher.name and r.manipulation == "none") or r.manipulation == "hard_labels" \
                or (r.teacher.name == "standard" and r.manipulation == "none"):
            out.append(r)
    return out


def table_path() -> Path:
    return cache_dir() / "lab" / "runs.parquet"


def load_runs(dataset: str | None = None) -> pd.DataFrame:
    """All recorded runs (newest last), optionally of one dataset; an unreadable table reads as empty."""
    path = table_path()
    if not path.is_file():
        return pd.DataFrame(columns=RUN_COLUMNS)
    try:
        runs = pd.read_parquet(path)
    except Exception as exc:  # a truncated or foreign file: the runs are lost, the app goes on
        raise LogitscopeError(f"The lab's run table {path} is unreadable ({type(exc).__name__}): delete it "
                              "to start a new table.") from exc
    if not set(RUN_COLUMNS) <= set(runs.columns):
        raise LogitscopeError(f"The lab's run table {path} lacks columns "
                              f"{sorted(set(RUN_COLUMNS) - set(runs.columns))}: delete it to start a new table.")
    if dataset is not None:
        runs = runs[runs["dataset"] == dataset]
    return runs.reset_index(drop=True)


RUN_COLUMNS = ["run", "name", "dataset", "teacher", "manipulation", "temperature", "hard_weight", "fraction",
               "epochs", "seed", "norm", "steps", "clean_accuracy", "robust_accuracy", "order_agreement",
               "mean_max_logit", "mean_logit_gap", "max_logit_ks_to_teacher", "seconds", "created", "student_key",
               "spec"]


def _save_runs(runs: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    runs.to_parquet(buffer, index=False)
    atomic_write(table_path(), buffer.getvalue())


def record(row: dict) -> pd.DataFrame:
    """Add a run's row to the table (a row with the same run id is replaced) and return the table."""
    with cache_lock(str(table_path()) + ".lock"):
        runs = load_runs() if table_path().is_file() else pd.DataFrame(columns=RUN_COLUMNS)
        runs = runs[runs["run"] != row["run"]]
        runs = pd.concat([runs, pd.DataFrame([row], columns=RUN_COLUMNS)], ignore_index=True)
        _save_runs(runs)
    return runs


def delete_runs(run_ids: Sequence[str]) -> None:
    """Remove runs from the table (their checkpoints stay in the cache)."""
    if not table_path().is_file():
        return
    with cache_lock(str(table_path()) + ".lock"):
        runs = load_runs()
        _save_runs(runs[~runs["run"].isin(list(run_ids))].reset_index(drop=True))


def run_recipes(dataset: str, trained: bool = True) -> list[Recipe]:
    """Recipes of the recorded runs of a dataset: for the model pickers, those whose checkpoints are intact
    (`trained`); with `trained=False` every run whose spec still makes a recipe, also one whose checkpoint is
    missing or corrupt (the bundle writer trains it again, as it does any model it packs).

    An unreadable table offers no runs here (reported once in the log), so every page's sidebar keeps
    working; the lab page shows the table's error with what to do.
    """
    out = {}
    try:
        runs = load_runs(dataset)
    except LogitscopeError as exc:
        report_corrupt(table_path(), exc, "the model pickers offer no lab runs")
        return []
    for _, row in runs.iterrows():
        try:
            s = LabSpec(**json.loads(row["spec"]))
            r = s.recipe()
        except (LogitscopeError, TypeError, ValueError):
            continue
        if not trained or is_trained(r):
            out[r.name] = r
    return list(out.values())


def run_id(spec: LabSpec, attack: AttackSpec) -> str:
    """A run is a spec evaluated under an attack: the same pair replaces its earlier row."""
    return stable_key({"lab": asdict(spec), "attack": attack.key()})


def order_agreement(teacher_logits: np.ndarray, student_logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample Kendall tau of the incorrect classes' order, student against teacher. (N,)"""
    return analysis.incorrect_class_order_agreement(teacher_logits, student_logits, labels)


def _grid_logits(recipe: Recipe, data: DataSpec, attack: AttackSpec, grid, device, ctx: JobContext, what: str,
                 data_dir: str | None = None):
    def on_batch(b: int, n: int) -> None:
        ctx.report(f"{what}: batch {b}/{n}")

    path = ensure_model(recipe, device, cancel=lambda: ctx.cancelled, data_dir=data_dir)
    return get_grid(lambda: load_checkpoint(path, device, recipe.key), recipe.key, data, attack, grid, device,
                    on_batch=on_batch, data_dir=data_dir)


def run(ctx: JobContext, spec: LabSpec, attack: AttackSpec, grid: Sequence[float],
        device: str | torch.device = "cpu", data_dir: str | None = None) -> dict:
    """Train (or reuse) the student of `spec`, evaluate it over the grid, record and return its row."""
    start = time.perf_counter()
    student = spec.recipe()
    teacher = student.teacher
    data = eval_data(spec.dataset)
    grid = with_clean(grid)
    current = {"what": f"distilling {student.name}"}

    def on_start(r: Recipe) -> None:
        is_student = r.key == student.key
        current["what"] = f"distilling {student.name}" if is_student else f"training the teacher {r.name} first"
        ctx.report(current["what"], 0.0)

    def on_train(p: TrainProgress) -> None:
        ctx.report(f"{current['what']}: epoch {p.epoch}/{p.epochs}, {format_seconds(p.elapsed)} elapsed, "
                   f"about {format_seconds(p.eta)} left", 0.7 * p.fraction)

    ctx.report(f"distilling {student.name}", 0.0)
    path = ensure_model(student, device, on_train, lambda: ctx.cancelled, data_dir, on_start)
    ctx.report(f"attacking {student.name} over {len(grid)} epsilons", 0.7)
    s_grid = get_grid(lambda: load_checkpoint(path, device, student.key), student.key, data, attack, grid, device,
                      on_batch=lambda b, n: ctx.report(f"attacking {student.name}: batch {b}/{n}", 0.7 + 0.2 * b / n),
                      data_dir=data_dir)
    ctx.report(f"evaluating the teacher {teacher.name}", 0.9)
    t_grid = _grid_logits(teacher, data, attack, grid, device, ctx, f"attacking the teacher {teacher.name}",
                          data_dir)
    clean_s, clean_t = s_grid[0.0], t_grid[0.0]
    s_stats = analysis.per_sample(clean_s.logits, clean_s.labels)
    t_stats = analysis.per_sample(clean_t.logits, clean_t.labels)
    row = {
        "run": run_id(spec, attack), "name": student.name, "dataset": spec.dataset, "teacher": spec.teacher,
        "manipulation": spec.manipulation, "temperature": float(spec.temperature),
        "hard_weight": float(spec.hard_weight), "fraction": float(spec.fraction), "epochs": int(spec.epochs),
        "seed": int(spec.seed), "norm": attack.norm, "steps": int(attack.steps),
        "clean_accuracy": analysis.accuracy(clean_s.logits, clean_s.labels),
        "robust_accuracy": json.dumps({f"{e:g}": analysis.accuracy(r.logits, r.labels)
                                       for e, r in sorted(s_grid.items())}),
        "order_agreement": float(order_agreement(clean_t.logits.numpy(), clean_s.logits.numpy(),
                                                 clean_s.labels.numpy()).mean()),
        "mean_max_logit": float(s_stats.max_logit.mean()), "mean_logit_gap": float(s_stats.logit_gap.mean()),
        "max_logit_ks_to_teacher": analysis.ks_distance(s_stats.max_logit, t_stats.max_logit),
        "seconds": time.perf_counter() - start, "created": pd.Timestamp.now().isoformat(timespec="seconds"),
        "student_key": student.key, "spec": json.dumps(asdict(spec)),
    }
    ctx.check()
    record(row)
    ctx.report("recorded in the run table", 1.0)
    return row


def display_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The run table as people read it: one accuracy column per epsilon, newest run first."""
    if runs.empty:
        return pd.DataFrame(columns=["name", "teacher", "manipulation", "T", "hard weight", "fraction", "epochs",
                                     "seed", "attack", "clean acc", "order agreement", "mean max logit",
                                     "seconds", "run"])
    rob = [json.loads(s) for s in runs["robust_accuracy"]]
    eps = sorted({e for d in rob for e in d if float(e) > 0}, key=float)
    out = pd.DataFrame({
        "name": runs["name"], "teacher": runs["teacher"], "manipulation": runs["manipulation"],
        "T": runs["temperature"], "hard weight": runs["hard_weight"], "fraction": runs["fraction"],
        "epochs": runs["epochs"], "seed": runs["seed"],
        "attack": [f"{n} PGD-{s}" for n, s in zip(runs["norm"], runs["steps"])],
        "clean acc": runs["clean_accuracy"],
    })
    for e in eps:
        out[f"acc @ eps {e}"] = [d.get(e, np.nan) for d in rob]
    out["order agreement"] = runs["order_agreement"]
    out["mean max logit"] = runs["mean_max_logit"]
    out["max-logit KS to teacher"] = runs["max_logit_ks_to_teacher"]
    out["seconds"] = runs["seconds"]
    out["run"] = runs["run"]
    return out.iloc[::-1].reset_index(drop=True)


def accuracy_long(runs: pd.DataFrame, last: int = 10) -> pd.DataFrame:
    """Accuracy versus epsilon of the `last` runs, for one chart. Columns: model (run name), eps, accuracy."""
    rows = []
    for _, r in runs.tail(last).iterrows():
        default_attack = r["norm"] == "linf" and int(r["steps"]) == hyper(r["dataset"]).eval_steps
        label = r["name"] if default_attack else f"{r['name']} ({r['norm']} PGD-{r['steps']})"
        for e, acc in json.loads(r["robust_accuracy"]).items():
            rows.append({"model": label, "eps": float(e), "accuracy": float(acc)})
    return pd.DataFrame(rows, columns=["model", "eps", "accuracy"])


def agreement_frame(teacher_logits: np.ndarray, students: dict[str, np.ndarray], labels: np.ndarray) -> pd.DataFrame:
    """Per-sample incorrect-class order agreement of each student with the teacher. Columns: model, tau."""
    parts = [pd.DataFrame({"model": name, "tau": order_agreement(teacher_logits, z, labels)})
             for name, z in students.items()]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["model", "tau"])
