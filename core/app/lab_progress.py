"""A lab run's progress over its steps, and its work as units for the worker processes."""

from __future__ import annotations

from typing import Sequence

from core.app import prepare_workers
from core.app.jobs import JobContext
from core.config import AttackSpec, DataSpec
from core.study import evidence
from core.study.recipes import Recipe

TRAIN, GRID, RELIABLE = 2.0, 1.0, 4.0  # rough relative costs on digits: distilling, the PGD grid, AutoAttack


class RunProgress:
    """A run's progress over its steps, each weighted by its rough cost. Every report raises Cancelled
    once a cancel was asked, so a run stops within a batch (of training or of an attack) or an epsilon."""

    def __init__(self, ctx: JobContext, total: float):
        self.ctx, self.total, self.done = ctx, total, 0.0

    def report(self, what: str, within: float = 0.0, weight: float = 0.0) -> None:
        self.ctx.report(what, min(0.99, (self.done + weight * within) / self.total))


class Quiet(RunProgress):
    """Progress over steps whose work the workers did (the cache reads them back): it only passes on a cancel."""

    def __init__(self, ctx: JobContext):
        super().__init__(ctx, 1.0)

    def report(self, what: str, within: float = 0.0, weight: float = 0.0) -> None:
        self.ctx.check()


def worker_units(replicas: Sequence, refs: dict[str, list[Recipe]], teacher: Recipe, attack: AttackSpec,
                 grid: Sequence[float], ev: evidence.Evidence | None, data: DataSpec, device,
                 data_dir: str | None) -> list[prepare_workers.Unit]:
    """A run's work as worker units: each replicate's student distilled and attacked over the PGD grid, then
    the teacher's grid, then every student's AutoAttack at the findings' eps (the baselines' distilled first if
    missing). Their weights add up to the run's total (`run`'s), so the workers' bar runs to the end."""
    units = [prepare_workers.Unit("grid", (r.recipe(), data, attack, tuple(grid), str(device), data_dir),
                                  TRAIN + GRID, r.recipe().name, TRAIN / (TRAIN + GRID)) for r in replicas]
    units.append(prepare_workers.Unit("grid", (teacher, data, attack, tuple(grid), str(device), data_dir), GRID,
                                      teacher.name))
    if ev is None:
        return units
    entries = [(ev.reliable, ev.reliable_eps)]
    students = [(r.recipe(), RELIABLE) for r in replicas] + [(r, TRAIN + RELIABLE) for v in refs.values() for r in v]
    return units + [prepare_workers.Unit("evidence", (r, entries, data, ev, str(device), data_dir), w, r.name)
                    for r, w in students]
