"""The first-run job in worker processes (core.app.prepare_workers): the same cache as in process, progress
that only rises, a cancel that stops the workers, and no workers in the hosted demo."""

from __future__ import annotations

from dataclasses import replace

import pytest

from core.app import jobs, prepare_workers
from core.app.prepare import logits_cached, prepare
from core.config import DEMO_ENV, DataSpec
from core.errors import Cancelled, LogitscopeError
from core.study.hyper import eval_attack
from core.study.recipes import is_trained, student_recipe, teacher_recipes

GRID = (0.0, 0.1)


def _short(recipe, epochs=1):
    return replace(recipe, spec=replace(recipe.spec, train=replace(recipe.spec.train, epochs=epochs)))


def _job():
    job = jobs.Job("test-prepare-workers", "test", lambda ctx: None)
    seen = []
    ctx = jobs.JobContext(job)
    original = ctx.report

    def report(stage=None, fraction=None, eta=None):
        seen.append((stage, fraction))
        original(stage, fraction, eta)

    ctx.report = report
    return job, ctx, seen


def test_workers_train_and_attack_into_the_one_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOGITSCOPE_CACHE", str(tmp_path))
    monkeypatch.setenv(prepare_workers.WORKERS_ENV, "2")
    standard = _short(teacher_recipes("digits")[0])
    student = student_recipe(standard, "none", epochs=1)
    recipes = [student, standard]  # a student before its teacher: the workers still train the teacher first
    data = DataSpec("digits", "test", 64)
    _, ctx, seen = _job()
    prepare(ctx, recipes, data, eval_attack("digits", steps=2), GRID)
    assert all(is_trained(r) and logits_cached(r, data, eval_attack("digits", steps=2), GRID) for r in recipes)
    fractions = [f for _, f in seen if f is not None]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert any("2 worker processes" in (s or "") for s, _ in seen)


def test_cancelling_the_job_stops_the_workers(tmp_path, monkeypatch):
    monkeypatch.setenv("LOGITSCOPE_CACHE", str(tmp_path))
    monkeypatch.setenv(prepare_workers.WORKERS_ENV, "2")
    recipes = [_short(r, epochs=200) for r in teacher_recipes("digits")[:2]]  # minutes of work
    job, ctx, seen = _job()
    original = ctx.report

    def cancel_soon(stage=None, fraction=None, eta=None):
        if len(seen) > 5:
            job.cancel()
        original(stage, fraction, eta)

    ctx.report = cancel_soon
    with pytest.raises(Cancelled):
        prepare(ctx, recipes, DataSpec("digits", "test", 64), eval_attack("digits", steps=2), GRID)
    assert not any(is_trained(r) for r in recipes)  # nothing half-written: checkpoints are atomic


def test_worker_count_policy(monkeypatch):
    monkeypatch.delenv(prepare_workers.WORKERS_ENV, raising=False)
    monkeypatch.delenv(DEMO_ENV, raising=False)
    assert prepare_workers.app_workers("cpu", 10) == prepare_workers.parallel.default_workers("cpu", 10)
    assert prepare_workers.app_workers("cuda", 10) == 1
    monkeypatch.setenv(prepare_workers.WORKERS_ENV, "1")
    assert prepare_workers.app_workers("cpu", 10) == 1
    monkeypatch.setenv(prepare_workers.WORKERS_ENV, "many")
    with pytest.raises(LogitscopeError, match="auto or a number"):
        prepare_workers.app_workers("cpu", 10)


def test_the_hosted_demo_uses_no_workers(monkeypatch):
    monkeypatch.delenv(prepare_workers.WORKERS_ENV, raising=False)
    monkeypatch.setenv(DEMO_ENV, "bundle.zip")
    assert prepare_workers.app_workers("cpu", 10) == 1  # each worker would hold its own torch on a 1 GB host


def test_units_wait_for_their_teachers_grid_and_their_own():
    standard = teacher_recipes("digits")[0]
    student = student_recipe(standard, "none")
    other = student_recipe(standard, "shuffle_nonmax")
    data, attack = DataSpec("digits", "test"), eval_attack("digits")
    units = [prepare_workers.Unit("grid", (student, data, attack, GRID, "cpu", None), 2.0, student.name),
             prepare_workers.Unit("grid", (standard, data, attack, GRID, "cpu", None), 2.0, standard.name),
             prepare_workers.Unit("evidence", (student, [], data, None, "cpu", None), 1.0, student.name),
             prepare_workers.Unit("evidence", (other, [], data, None, "cpu", None), 1.0, other.name)]
    # the student's grid after its teacher's; its evidence after its grid; another student's evidence (no grid
    # unit of its own: it trains there) after its teacher's grid
    assert prepare_workers.dependencies(units) == [[1], [], [0], [1]]


def test_findings_first_keeps_every_unit_once_whatever_the_mix():
    """Two of the findings' students still need AutoAttack, a teacher's evidence sits among the first steps:
    every unit is run once, AutoAttack on those students right after the findings' grids."""
    from core.app.prepare import findings_first

    def unit(kind, name):
        return prepare_workers.Unit(kind, (), 1.0, name)

    grids = [unit("grid", n) for n in ("standard", "pgd-at", "student:pgd-at:none", "trades")]
    checks = [unit("evidence", n) for n in ("student:pgd-at:none", "student:standard:none", "standard",
                                              "student:pgd-at:none", "trades")]
    out = findings_first(grids, checks, n_first=2)
    assert sorted(map(id, out)) == sorted(map(id, grids + checks))  # each unit exactly once
    assert [(u.kind, u.name) for u in out[:5]] == [
        ("grid", "standard"), ("grid", "pgd-at"), ("grid", "student:pgd-at:none"),
        ("evidence", "student:pgd-at:none"), ("evidence", "student:standard:none")]
    assert out[5].name == "trades" and out[5].kind == "grid"
