"""The first-run job's work in worker processes: each model's training and PGD grid, then its evidence, as units.

The app runs its jobs in a thread of the Streamlit process, where the digits models' small operations cannot
keep two cores busy (one model trains about as fast with two threads as with one). `core.study.parallel`'s
worker processes, one thread each, do: the same work as `prepare` does in process, as units taken in the
order that states the findings soonest (`core.app.prepare._findings_first`), each once what it depends on
is done (`dependencies`), writing into the one cache with its atomic writes and locks. Each worker holds its
own torch (about 0.4 GB), so the hosted demo, which trains nothing by default, never uses them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from core.app.jobs import JobContext
from core.config import AttackSpec, DataSpec, demo_mode
from core.engine.logits import get_grid
from core.errors import LogitscopeError
from core.study import evidence, parallel
from core.study.evidence import Evidence
from core.study.recipes import Recipe, model_source

WORKERS_ENV = "LOGITSCOPE_APP_WORKERS"  # worker processes of the app's jobs: a number, or "auto" (default)
Entries = list[tuple[AttackSpec, tuple[float, ...]]]


def app_workers(device: str | torch.device, n_units: int) -> int:
    """Worker processes for a job of `n_units` units: one per core on a CPU (`parallel.default_workers`), none
    (this process) in the hosted demo or on an accelerator; LOGITSCOPE_APP_WORKERS=N overrides."""
    choice = os.environ.get(WORKERS_ENV, "auto").strip().lower() or "auto"
    if choice != "auto":
        if not choice.isdigit() or not 1 <= int(choice) <= parallel.MAX_WORKERS:
            raise LogitscopeError(f"{WORKERS_ENV}={choice!r}: use auto or a number from 1 to {parallel.MAX_WORKERS}.")
        return min(int(choice), max(1, n_units))
    if demo_mode():
        return 1
    return parallel.default_workers(device, n_units)


def grid_unit(recipe: Recipe, data: DataSpec, attack: AttackSpec, grid: Sequence[float], device: str,
              data_dir: str | None, report: Callable[[str, float], None]) -> None:
    """Train the model if missing (its teacher first), then its clean logits (what findings 1 and 2 read, so
    they come as soon as possible), then its logits over the PGD grid, into the cache."""
    source = model_source(recipe, device, lambda p: report("train", p.fraction), data_dir=data_dir)
    report("PGD", 0.0)
    get_grid(source, recipe.key, data, attack, [0.0], device, data_dir=data_dir)
    get_grid(source, recipe.key, data, attack, grid, device, on_batch=lambda b, n: report("PGD", b / n),
             data_dir=data_dir)


def evidence_unit(recipe: Recipe, entries: Entries, data: DataSpec, ev: Evidence, device: str,
                  data_dir: str | None, report: Callable[[str, float], None]) -> None:
    """Compute these entries of the model's evidence plan (`evidence.ensure`), into the cache."""
    source = model_source(recipe, device, data_dir=data_dir)
    for j, entry in enumerate(entries):
        evidence.ensure(source, recipe, data, ev, device, data_dir=data_dir, entries=[entry],
                        progress=lambda what, f, j=j: report("evidence", (j + f) / len(entries)))


UNITS = {"grid": grid_unit, "evidence": evidence_unit}


def run_unit(kind: str, args: tuple, report: Callable[[str, float], None]) -> None:
    """One unit of either kind (a `core.study.parallel` unit: module-level, its arguments picklable)."""
    UNITS[kind](*args, report=report)


@dataclass(frozen=True)
class Unit:
    """One unit of the job: its kind and arguments, its weight in the job's units of work, its share of
    training (the "train" reports; the rest comes after), and the model it is about."""

    kind: str
    args: tuple
    weight: float
    name: str
    train_share: float = 0.0


def run(ctx: JobContext, units: Sequence[Unit], total: float, workers: int) -> float:
    """Run the units in `workers` processes, in order, each once what it waits for is done (`dependencies`; a
    free worker takes the first ready unit), reporting to the job: what runs now and the fraction of the
    job's `total` done. Returns the units of work done.
    Cancelling the job stops the workers; what they finished stays in the cache."""
    got = [0.0] * len(units)
    now: dict[int, str] = {}

    def on_unit(i: int, what: str, fraction: float) -> None:
        share = units[i].train_share
        f = share * fraction if what == "train" else share + (1 - share) * fraction
        got[i] = max(got[i], min(max(f, 0.0), 1.0))
        doing = {"train": "training", "PGD": "attacking (PGD grid)", "evidence": "AutoAttack and the masking check"}
        now[i] = f"{units[i].name}: {doing.get(what, what)}"
        finished = sum(g >= 1.0 for g in got)
        running = "; ".join(now[j] for j in sorted(now) if got[j] < 1.0) or now[i]
        ctx.report(f"{running} ({finished} of {len(units)} steps done, {workers} worker processes)",
                   sum(u.weight * g for u, g in zip(units, got)) / total)

    parallel.run_units(run_unit, [(u.kind, u.args) for u in units], workers, on_unit, cancel=lambda: ctx.cancelled,
                       after=dependencies(units))
    return sum(u.weight for u in units)


def dependencies(units: Sequence[Unit]) -> list[list[int]]:
    """What each unit waits for (indices): a model's grid for its teacher's, its evidence for its own grid (or,
    without one, for its teacher's). The model is each unit's first argument."""
    grid_of = {u.args[0].key: i for i, u in enumerate(units) if u.kind == "grid"}
    out = []
    for i, u in enumerate(units):
        recipe = u.args[0]
        teacher = grid_of.get(recipe.teacher.key) if recipe.teacher is not None else None
        own = grid_of.get(recipe.key) if u.kind == "evidence" else None
        first = own if own is not None else teacher
        out.append([] if first is None or first == i else [first])
    return out
