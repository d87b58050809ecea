"""The distillation lab: "what if" runs of finding 3, and the table that keeps them.

A run distils R students (replicates: seeds spec.seed .. spec.seed + R - 1, each its own recipe and
checkpoint) from the study's seed-0 teacher's manipulated clean logits (core.engine.distill), evaluates
them over the epsilon grid under PGD (fast, an upper bound on robust accuracy) and under the reliable
attack, AutoAttack, at the findings' epsilon (`core.study.evidence`), and distils the baselines with the
same settings and seeds: the untouched teacher's student (no manipulation) and the standard teacher's.
Robust accuracy comes with its 95% interval over test images and replicates, and the difference to the
untouched teacher's student with its paired interval and verdict (`core.engine.stats`). The run appends
one row to the run table (`core.app.lab_table`, re-exported here), so runs survive page changes and
restarts and line up side by side. A spec trained before reuses its checkpoint, an attack computed
before its cache entry.
"""

from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from core.app import prepare_workers
from core.app.jobs import JobContext, format_seconds
from core.app.lab_progress import GRID, RELIABLE, TRAIN, Quiet, RunProgress, worker_units
from core.app.lab_spec import MAX_REPLICATES, STUDY_SEED, LabSpec, default_spec, run_id
from core.app.lab_table import (
    BASELINES,
    BUNDLED,
    SHARED_RUNS,
    VISITOR_RUNS,
    accuracy_long,
    delete_runs,
    display_table,
    interval_frame,
    load_runs,
    owned,
    record,
    summary,
    table_path,
)
from core.config import AttackSpec, DataSpec, demo_mode, with_clean
from core.engine import analysis, stats
from core.engine.group import grouping_pays
from core.engine.logits import LogitsRecord, get_grid
from core.engine.models import load_checkpoint
from core.engine.train import TrainProgress
from core.errors import LogitscopeError
from core.storage import report_corrupt
from core.study import evidence
from core.study.hyper import eval_data
from core.study.recipes import (
    Recipe,
    default_recipes,
    ensure_model,
    ensure_models,
    is_trained,
)

__all__ = ["BASELINES", "BUNDLED", "SHARED_RUNS", "VISITOR_RUNS", "owned", "MAX_REPLICATES", "STUDY_SEED", "LabSpec", "accuracy_long", "agreement_frame", "baselines",
           "default_spec", "delete_runs", "display_table", "evidence_fields", "interval_frame", "load_runs",
           "order_agreement", "record", "run", "run_id", "run_recipes", "summary", "table_path",
           "autoattack_available"]  # the run table's functions are re-exported

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


def run_recipes(dataset: str, trained: bool = True, owner: str | None = None) -> list[Recipe]:
    """Recipes of the recorded runs of a dataset (their first replicate): for the model pickers, those whose
    checkpoints are intact (`trained`); with `trained=False` every run whose spec still makes a recipe, also
    one whose checkpoint is missing or corrupt (the bundle writer trains it again, as it does any model it packs).
    With `owner` (a demo visitor): the bundle's runs and theirs only.

    An unreadable table offers no runs here (reported once in the log), so every page's sidebar keeps
    working; the lab page shows the table's error with what to do.
    """
    out = {}
    try:
        runs = load_runs(dataset, owner)
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


def order_agreement(teacher_logits: np.ndarray, student_logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample Kendall tau of the incorrect classes' order, student against teacher. (N,)"""
    return analysis.incorrect_class_order_agreement(teacher_logits, student_logits, labels)


def autoattack_available() -> bool:
    """pyautoattack is installed (a hosted demo may leave it out: its lab then measures PGD only)."""
    return importlib.util.find_spec("pyautoattack") is not None


@dataclass(frozen=True)
class _Evaluated:
    """One student: its PGD grid (the run's own students) and its record under AutoAttack at the findings' eps
    (None without pyautoattack)."""

    recipe: Recipe
    grid: dict[float, LogitsRecord] | None
    reliable: LogitsRecord | None

    @property
    def correct(self) -> np.ndarray:
        """(N,) bool: the test images AutoAttack did not fool."""
        return (self.reliable.logits.argmax(1) == self.reliable.labels).numpy()


def _evaluate(recipe: Recipe, pgd: tuple[AttackSpec, Sequence[float]] | None, ev: evidence.Evidence | None,
              data: DataSpec, device, ctx: JobContext, progress: RunProgress, data_dir: str | None) -> _Evaluated:
    """Distil (or reuse) one student, then its PGD grid (if `pgd`) and AutoAttack (if `ev`): each a cache entry."""
    cancel: Callable[[], bool] = lambda: ctx.cancelled  # noqa: E731
    what = {"now": f"distilling {recipe.name}"}

    def on_start(r: Recipe) -> None:
        what["now"] = f"distilling {recipe.name}" if r.key == recipe.key else f"training the teacher {r.name} first"
        progress.report(what["now"])

    def on_train(p: TrainProgress) -> None:
        progress.report(f"{what['now']}: epoch {p.epoch}/{p.epochs}, {format_seconds(p.elapsed)} elapsed, "
                        f"about {format_seconds(p.eta)} left", p.fraction, TRAIN)

    progress.report(what["now"])
    path = ensure_model(recipe, device, on_train, cancel, data_dir, on_start)
    progress.done += TRAIN
    net: list[torch.nn.Module] = []

    def model() -> torch.nn.Module:  # loaded once, and only if an entry is missing
        if not net:
            net.append(load_checkpoint(path, device, recipe.key))
        return net[0]

    def attack(spec: AttackSpec, eps: Sequence[float], weight: float) -> dict[float, LogitsRecord]:
        label = f"attacking {recipe.name}: {spec.describe()}"
        progress.report(label)
        out = get_grid(model, recipe.key, data, spec, eps, device, data_dir=data_dir, cancel=cancel,
                       on_batch=lambda b, n: progress.report(f"{label}, batch {b}/{n}", b / n, weight))
        progress.done += weight
        return out

    grid = attack(pgd[0], pgd[1], GRID) if pgd is not None else None
    return _Evaluated(recipe, grid, attack(ev.reliable, (0.0, ev.eps), RELIABLE)[ev.eps] if ev is not None else None)


def _available(spec: LabSpec) -> bool:
    """A baseline the run can distil: anywhere, except in the hosted demo when its teacher is not bundled."""
    return not demo_mode() or is_trained(spec.teacher_recipe())


def run(ctx: JobContext, spec: LabSpec, attack: AttackSpec, grid: Sequence[float],
        device: str | torch.device = "cpu", data_dir: str | None = None, owner: str = "") -> dict:
    """Distil (or reuse) the students of `spec` and its baselines, evaluate them, record and return the run's row.

    The students' PGD grid under `attack`, and every student's AutoAttack at the findings' epsilon of
    `attack`'s norm; the row holds means over replicates, intervals and paired differences (`evidence_fields`).
    Without pyautoattack the run measures PGD only, and its row has no interval (as rows recorded before).
    `owner`: the demo visitor whose run it is (`lab_table.record`); the row says whether every student was
    trained before (`reused`: the run then only re-read or re-computed their evaluations).
    """
    start = time.perf_counter()
    spec.recipe()  # a bad setting fails here, before any work
    replicas = spec.replicas()
    reused = all(is_trained(r.recipe()) for r in replicas)
    ev = evidence.evidence(spec.dataset, attack.norm, attack.steps, seed=attack.seed, data_dir=data_dir, grid=grid) \
        if autoattack_available() else None
    data, grid = eval_data(spec.dataset), with_clean(grid)
    refs = {role: [r.recipe() for r in s.replicas()] for role, s in spec.baseline_specs().items()
            if ev is not None and _available(s)}
    progress = RunProgress(ctx, len(replicas) * (TRAIN + GRID + RELIABLE) + GRID
                         + sum(len(v) for v in refs.values()) * (TRAIN + RELIABLE))
    together = [r.recipe() for r in replicas] + [r for recipes in refs.values() for r in recipes]
    if grouping_pays(device) and sum(not is_trained(r) for r in together) > 1:
        progress.report(f"distilling {len(together)} students together")
        ensure_models(together, device, cancel=lambda: ctx.cancelled, data_dir=data_dir, group=True,
                      progress=lambda p: progress.report(f"distilling {len(together)} students together: epoch "
                                                         f"{p.epoch}/{p.epochs}", p.fraction, 0.0))
    workers = prepare_workers.app_workers(device, len(replicas) + sum(len(v) for v in refs.values()))
    if workers > 1 and torch.device(device).type == "cpu":  # distil and attack in worker processes; read below
        units = worker_units(replicas, refs, spec.teacher_recipe(), attack, grid, ev, data, device, data_dir)
        prepare_workers.run(ctx, units, progress.total, workers)
        progress = Quiet(ctx)
    students = [_evaluate(r.recipe(), (attack, grid), ev, data, device, ctx, progress, data_dir) for r in replicas]
    teacher = spec.teacher_recipe()
    progress.report(f"evaluating the teacher {teacher.name}")
    path = ensure_model(teacher, device, cancel=lambda: ctx.cancelled, data_dir=data_dir)
    t_grid = get_grid(lambda: load_checkpoint(path, device, teacher.key), teacher.key, data, attack, grid, device,
                      on_batch=lambda b, n: progress.report(f"attacking the teacher {teacher.name}: batch {b}/{n}",
                                                            b / n, GRID), data_dir=data_dir)
    progress.done += GRID
    refs_done = {role: [_evaluate(r, None, ev, data, device, ctx, progress, data_dir) for r in recipes]
                 for role, recipes in refs.items()}

    clean_t = t_grid[0.0]
    t_stats = analysis.per_sample(clean_t.logits, clean_t.labels)
    per_rep, summary = [], []
    for r, s in zip(replicas, students):
        clean = s.grid[0.0]
        ps = analysis.per_sample(clean.logits, clean.labels)
        pgd = {f"{e:g}": analysis.accuracy(x.logits, x.labels) for e, x in sorted(s.grid.items())}
        per_rep.append({"seed": r.seed, "key": s.recipe.key, "clean_accuracy": pgd["0"], "pgd_accuracy": pgd,
                        "reliable_accuracy": float(s.correct.mean()) if ev is not None else None})
        summary.append([float(order_agreement(clean_t.logits.numpy(), clean.logits.numpy(),
                                              clean.labels.numpy()).mean()),
                        float(ps.max_logit.mean()), float(ps.logit_gap.mean()),
                        analysis.ks_distance(ps.max_logit, t_stats.max_logit)])
    agreement, max_logit, gap, ks = np.mean(summary, axis=0)
    first = students[0].recipe
    row = {
        "run": run_id(spec, attack), "name": first.name, "dataset": spec.dataset, "teacher": spec.teacher,
        "manipulation": spec.manipulation, "temperature": float(spec.temperature),
        "hard_weight": float(spec.hard_weight), "fraction": float(spec.fraction), "epochs": int(spec.epochs),
        "seed": int(spec.seed), "norm": attack.norm, "steps": int(attack.steps),
        "clean_accuracy": float(np.mean([p["clean_accuracy"] for p in per_rep])),
        "robust_accuracy": json.dumps({e: float(np.mean([p["pgd_accuracy"][e] for p in per_rep]))
                                       for e in per_rep[0]["pgd_accuracy"]}),
        "order_agreement": float(agreement), "mean_max_logit": float(max_logit), "mean_logit_gap": float(gap),
        "max_logit_ks_to_teacher": float(ks), "created": pd.Timestamp.now().isoformat(timespec="seconds"),
        "student_key": first.key, "spec": json.dumps(asdict(spec)),
        "replicate_results": json.dumps(per_rep), "replicates": len(replicas),
        "seeds": json.dumps([r.seed for r in replicas]), "student_keys": json.dumps([s.recipe.key for s in students]),
        "owner": owner, "reused": reused,
    }
    if ev is not None:
        row.update(evidence_fields([r.seed for r in replicas], [s.recipe.key for s in students],
                                   [s.correct for s in students],
                                   {role: ([b.recipe.key for b in done], [b.correct for b in done])
                                    for role, done in refs_done.items()}, ev.reliable.at(ev.eps).describe(), ev.eps))
    row["seconds"] = time.perf_counter() - start
    ctx.check()
    record(row)
    ctx.report("recorded in the run table", 1.0)
    return row


def evidence_fields(seeds: Sequence[int], keys: Sequence[str], correct: Sequence[np.ndarray],
                    refs: dict[str, tuple[Sequence[str], Sequence[np.ndarray]]], attack: str, eps: float,
                    n_boot: int = 2000) -> dict:
    """A row's robust accuracy under the reliable attack, with its 95% interval (over test images, and over
    replicates when there are several), and each baseline's, with the paired difference and its verdict.

    correct[i]: (N,) bool, the images replicate i's student survives (seed seeds[i]); refs: role (a key of
    BASELINES) -> (keys, correct) of its students, one per replicate, the same seeds on the same images.
    """
    student = stats.interval(list(correct), n_boot=n_boot)
    results = []
    for role, (ref_keys, ref_correct) in refs.items():
        name, claim, direction = BASELINES[role]
        diff = stats.paired_difference(list(correct), list(ref_correct), n_boot=n_boot)
        same = list(ref_keys) == list(keys)
        verdict = "the run is this baseline" if same else stats.verdict(diff, direction)
        results.append({"role": role, "name": name, "keys": list(ref_keys),
                        "robust": stats.interval(list(ref_correct), n_boot=n_boot).to_dict(),
                        "per_seed": [float(np.mean(c)) for c in ref_correct], "difference": diff.to_dict(),
                        "claim": claim, "verdict": verdict})
    return {"replicates": len(seeds), "seeds": json.dumps([int(s) for s in seeds]),
            "student_keys": json.dumps(list(keys)),
            "reliable_attack": attack, "reliable_eps": float(eps), "robust_reliable": student.estimate,
            "robust_lo": student.lo, "robust_hi": student.hi, "baseline_results": json.dumps(results)}


def agreement_frame(teacher_logits: np.ndarray, students: dict[str, np.ndarray], labels: np.ndarray) -> pd.DataFrame:
    """Per-sample incorrect-class order agreement of each student with the teacher. Columns: model, tau."""
    parts = [pd.DataFrame({"model": name, "tau": order_agreement(teacher_logits, z, labels)})
             for name, z in students.items()]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["model", "tau"])
