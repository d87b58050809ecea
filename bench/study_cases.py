"""Benchmarks of the study: training, the reproduction with its evidence, and the lab's replicates.

Each reference is measured in the same run: the naive training loop of bench/reference.py (a DataLoader,
PGD that also computes weight gradients, float32), or the same units one after another.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.common import ROOT, Result, judge, median_time, workspace
from bench.reference import reference_epoch, reference_pgd
from core.engine.data import load_dataset
from core.engine.models import build_model


def _naive_epochs(quick: bool) -> tuple[float, float]:
    """Seconds of one naive epoch on the digits training split: (standard, PGD-AT with the study's budget)."""
    from core.study.hyper import hyper

    d, h = load_dataset("digits"), hyper("digits")
    model = build_model("digits_cnn", d.shape, 10, d.mean, d.std)
    std_epoch = median_time(lambda: reference_epoch(model, d.x_train, d.y_train), 2 if quick else 3)
    at_epoch = median_time(lambda: reference_epoch(model, d.x_train, d.y_train, adversarial_eps=h.train_eps,
                                                   steps=h.train_steps), 1 if quick else 2)
    return std_epoch, at_epoch


def _naive_epoch(recipe, std_epoch: float, at_epoch: float) -> float:
    """A recipe's naive epoch: PGD-AT's for the adversarial methods (TRADES 1.3x: one more pass per step), else
    the standard one (a student's teacher logits are computed once, outside its epochs)."""
    method = recipe.spec.train.method
    return at_epoch * (1.3 if method == "trades" else 1.0) if method in ("pgd", "trades") else std_epoch


def _naive_study_seconds(quick: bool) -> float:
    """The naive cost of the default digits study, from per-epoch costs measured now."""
    from core.study.hyper import hyper
    from core.study.recipes import default_recipes
    from core.study.report import reproduce  # noqa: F401  (same import cost as the real run)

    d = load_dataset("digits")
    h = hyper("digits")
    model = build_model("digits_cnn", d.shape, 10, d.mean, d.std)
    std_epoch, at_epoch = _naive_epochs(quick)
    eval_one = median_time(lambda: [reference_pgd(model.eval(), d.x_test, d.y_test, e, h.eval_steps)
                                    for e in h.eps_grid if e > 0], 1)
    return sum(r.spec.train.epochs * _naive_epoch(r, std_epoch, at_epoch) + eval_one for r in default_recipes("digits"))


def precompute_digits_seconds(quick: bool) -> list[Result]:
    """The default digits study trained and attacked with PGD-20 over the grid, one seed, from an empty cache (the
    workspace's): `python -m core precompute --dataset digits`, the work of `reproduce` before its evidence."""
    naive = _naive_study_seconds(quick)
    ws = workspace()
    if ws.filled or any(ws.cache.iterdir()):
        raise RuntimeError("precompute_digits_seconds must run first, on the empty workspace cache")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "core", "precompute", "--dataset", "digits", "--quiet"],
                   cwd=ROOT, env=ws.env(), check=True, capture_output=True)
    seconds = time.perf_counter() - t
    ws.filled = True
    models = len(list((ws.cache / "models" / "digits").glob("*.pt")))
    goal = "value <= 60"
    return [Result("precompute_digits_seconds", seconds, "s", naive, naive / seconds, goal, judge(goal, seconds, None),
                   f"{models} models trained + PGD-20 over the grid (precompute; reproduce adds AutoAttack: "
                   "reproduce_digits_seconds); reference = naive DataLoader loop, per-epoch costs measured now")]


def _reproduce_reliable(name: str, seeds: int, goal_seconds: int) -> list[Result]:
    """`python -m core reproduce --dataset digits --seeds N` from an empty cache of its own, timed."""
    with tempfile.TemporaryDirectory(prefix="logitscope-bench-reliable-") as tmp:
        out = Path(tmp) / "report.json"
        env = {**workspace().env(), "LOGITSCOPE_CACHE": tmp}
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "core", "reproduce", "--dataset", "digits", "--seeds", str(seeds),
                        "--quiet", "--json", str(out)], cwd=ROOT, env=env, check=True, capture_output=True)
        seconds = time.perf_counter() - t
        report = json.loads(out.read_text())
    one_by_one = sum(report["stage_seconds"][k] for k in ("train", "pgd", "evidence"))
    verdicts = ", ".join(f"{f['id']} {f['verdict']}" for f in report["findings"])
    goal = f"value <= {goal_seconds}"
    return [Result(name, seconds, "s", one_by_one, one_by_one / seconds, goal, judge(goal, seconds, None),
                   f"{len(report['models'])} models, {report['workers']} worker processes; reference = the same units "
                   f"one after another (the sum of their own times); findings: {verdicts}")]


def reproduce_digits_seconds(quick: bool) -> list[Result]:
    """`python -m core reproduce --dataset digits`: the study with its evidence (AutoAttack at the findings' eps, the
    masking check) and the findings' verdicts, one seed, from an empty cache of its own. Full suite only."""
    return _reproduce_reliable("reproduce_digits_seconds", 1, 30)


def reproduce_digits_3seeds_seconds(quick: bool) -> list[Result]:
    """The same with `--seeds 3`. Full suite only."""
    return _reproduce_reliable("reproduce_digits_3seeds_seconds", 3, 75)


def _train_unit(recipe, report) -> float:
    """One model's training (a `core.study.parallel` unit, in a worker process); returns its seconds."""
    from core.study.recipes import ensure_model

    t = time.perf_counter()
    ensure_model(recipe, progress=lambda p: report("train", p.fraction))
    return time.perf_counter() - t


def train_throughput(quick: bool) -> list[Result]:
    """Images per second of the whole default digits study's training, the project's way (teachers, then students;
    one worker process per core, as `reproduce` runs it) against the naive loop one model after another.

    Every recipe runs its own epochs (the study's 20) in an empty cache of its own, so nothing is reused; the
    worker processes' start (a few seconds) is counted. Full suite only."""
    import os

    from core.study import parallel
    from core.study.recipes import default_recipes

    recipes = default_recipes("digits")
    epochs = recipes[0].spec.train.epochs
    teachers = [r for r in recipes if r.teacher is None]
    students = [r for r in recipes if r.teacher is not None]
    n_images = sum(len(load_dataset("digits").y_train) * r.spec.train.epochs for r in recipes)
    old = os.environ.get("LOGITSCOPE_CACHE")
    with tempfile.TemporaryDirectory(prefix="logitscope-bench-train-") as tmp:
        os.environ["LOGITSCOPE_CACHE"] = tmp
        try:
            t = time.perf_counter()
            units = [(r,) for r in teachers + students]  # teachers first, as reproduce orders them
            parallel.run_units(_train_unit, units, parallel.default_workers("cpu", len(units)))
            ours = time.perf_counter() - t
        finally:
            if old is None:
                os.environ.pop("LOGITSCOPE_CACHE", None)
            else:
                os.environ["LOGITSCOPE_CACHE"] = old
    std_epoch, at_epoch = _naive_epochs(quick)
    naive = sum(r.spec.train.epochs * _naive_epoch(r, std_epoch, at_epoch) for r in recipes)
    goal = "ratio >= 3"
    return [Result("train_throughput", n_images / ours, "img/s", n_images / naive, naive / ours, goal,
                   judge(goal, n_images / ours, naive / ours),
                   f"{len(recipes)} models x {epochs} epochs, {parallel.default_workers('cpu', len(teachers))} worker "
                   "processes; reference = naive DataLoader loop, float32, one model after another")]


def lab_replicates_seconds(quick: bool) -> list[Result]:
    """A lab run of 3 replicates of the default configuration (its students and baselines distilled, PGD over the
    grid, AutoAttack at the findings' eps), the teacher cached; fresh seeds, so nothing else is. Full suite only."""
    from core.app import jobs, lab
    from core.study.hyper import eval_attack, hyper

    workspace().fill()
    spec = replace(lab.default_spec("digits"), seed=3000, replicates=3)
    job = jobs.Job("bench-lab", "bench lab run", lambda ctx: None)
    t = time.perf_counter()
    row = lab.run(jobs.JobContext(job), spec, eval_attack("digits"), hyper("digits").eps_grid)
    seconds = time.perf_counter() - t
    goal = "value <= 6"
    return [Result("lab_replicates_seconds", seconds, "s", None, None, goal, judge(goal, seconds, None),
                   f"3 students + their baselines ({row.get('replicates')} replicates), PGD-20 grid and "
                   "AutoAttack each; no reference")]
