"""The Ray executor against the local one, on this machine: a 12-task digits sweep, and the scheduling cost of a task.

The sweep: standard and PGD-AT at three training epsilons, seed 0 (4 models: 4 training tasks, 4 evaluations over
the PGD grid, 4 evidence plans with AutoAttack), from an empty cache, each executor with its defaults (local: this
process with every core; Ray: one CPU per task, as many tasks side by side as there are cores). Ray's start-up
(the local cluster and a warm worker per core) is timed on its own row, not in the sweep's.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace

from bench.common import Result, judge

_TRIVIAL = 40  # tasks of the scheduling-overhead measurement


def _noop(i: int, report) -> int:
    report("noop", 1.0)
    return i


def _warm(report) -> int:
    import core.study.fanout  # noqa: F401  (what a sweep's first task imports)

    time.sleep(0.5)  # hold the worker so that the next warm-up task starts another one
    return os.getpid()


def _recipes(quick: bool):
    from core.study.sweep import SweepGrid, sweep_recipes

    recipes = sweep_recipes(SweepGrid("digits", ("standard", "pgd-at"), (0.1, 0.2, 0.3), (0,)))
    if quick:  # a few epochs: the same tasks, smaller
        recipes = [replace(r, spec=replace(r.spec, train=replace(r.spec.train, epochs=3))) for r in recipes]
    return recipes


def _sweep_seconds(executor, recipes) -> tuple[float, int]:
    from core.study import fanout

    with tempfile.TemporaryDirectory(prefix="logitscope-bench-sweep-") as tmp:
        before = os.environ.get("LOGITSCOPE_CACHE")
        os.environ["LOGITSCOPE_CACHE"] = tmp
        try:
            t = time.perf_counter()
            out = fanout.run(executor, "digits", recipes, evidence=True)
            return time.perf_counter() - t, len(out.trained) + len(out.computed)
        finally:
            if before is None:
                os.environ.pop("LOGITSCOPE_CACHE", None)
            else:
                os.environ["LOGITSCOPE_CACHE"] = before


def sweep_ray_overhead(quick: bool) -> list[Result]:
    """Wall time of a 12-task digits sweep with Ray over the local executor; Ray's start-up; ms per trivial task."""
    import ray

    from core.study import executor_ray
    from core.study.executors import LocalExecutor, Task

    recipes = _recipes(quick)
    local_seconds, _ = _sweep_seconds(LocalExecutor(), recipes)
    started_here = not ray.is_initialized()
    t = time.perf_counter()
    ex = executor_ray.RayExecutor(threads=1)
    ex.start()
    cores = int(ray.cluster_resources().get("CPU", 1))
    ex.run([Task("warm", _warm, ()) for _ in range(cores)])  # one warm worker per core, torch imported
    start = time.perf_counter() - t
    try:
        ray_seconds, done = _sweep_seconds(ex, recipes)
        trivial = [Task(f"noop {i}", _noop, (i,)) for i in range(_TRIVIAL)]
        local_tasks = min(_time(lambda: LocalExecutor(1).run(trivial)) for _ in range(2))
        ray_tasks = min(_time(lambda: ex.run(trivial)) for _ in range(2))
    finally:
        if started_here:
            ray.shutdown()
    per_task_ms = (ray_tasks - local_tasks) / _TRIVIAL * 1000
    ratio = ray_seconds / local_seconds
    goal = "value <= 1.3"
    what = "3 epochs per model (--quick)" if quick else "the study's epochs"
    return [
        Result("sweep_ray_overhead", ratio, "x", None, None, goal, judge(goal, ratio, None),
               f"Ray {ray_seconds:.1f} s / local {local_seconds:.1f} s for 4 digits models x (train, PGD grid, "
               f"evidence) = 12 tasks, {what}; local: this process, every core; Ray: 1 CPU per task on {cores} CPUs"),
        Result("ray_start_seconds", start, "s", None, None, "value <= 20", judge("value <= 20", start, None),
               "a local Ray with a warm worker (torch imported) per core; paid once per command, not per task"),
        Result("ray_task_overhead_ms", per_task_ms, "ms", None, None, "value <= 50",
               judge("value <= 50", per_task_ms, None),
               f"scheduling cost of one trivial task on warm workers over the local executor's, {_TRIVIAL} tasks "
               "(driver-side dependency order, progress board, result fetch)"),
    ]


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t
