"""Sweeps and executors without Ray: the sweep's recipes and registry, the task graph, the local executor,
the file shipping of runs without a shared filesystem, and the app never importing Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.app import views
from core.config import cache_dir
from core.errors import LogitscopeError
from core.study import fanout
from core.study.executors import LocalExecutor, Task, collect_files, read_files, write_files
from core.study.precompute import setting, units_of
from core.study.recipes import checkpoint_path, default_recipes, zoo_recipe
from core.study.sweep import SweepGrid, method_of, remember_sweep, sweep_recipes, swept_recipes, train_eps_of

ROOT = Path(__file__).resolve().parent.parent


def test_a_sweep_has_one_model_per_combination_and_one_standard_model_per_seed():
    grid = SweepGrid("digits", ("standard", "pgd-at", "trades"), (0.05, 0.1, 0.2, 0.3), (0, 1, 2))
    recipes = sweep_recipes(grid)
    assert len(recipes) == 3 * (1 + 4 + 4)  # standard does not depend on the training epsilon
    assert len({r.key for r in recipes}) == len(recipes)
    names = {r.name for r in recipes}
    assert {"standard-s0", "pgd-at-eps0.05-s0", "trades-eps0.3-s2"} <= names
    at = next(r for r in recipes if r.name == "pgd-at-eps0.1-s1")
    assert (at.spec.train.method, at.spec.train.attack.eps, at.spec.train.seed) == ("pgd", 0.1, 1)
    assert (method_of(at), train_eps_of(at)) == ("pgd-at", 0.1)
    fast = sweep_recipes(SweepGrid("digits", ("fast-at",), (0.2,), (0,)))[0]
    assert (fast.spec.train.method, fast.spec.train.attack.steps, method_of(fast)) == ("fgsm", 1, "fast-at")


def test_a_combination_equal_to_a_default_study_model_shares_its_key_and_students_follow_their_teacher():
    recipes = sweep_recipes(SweepGrid("digits", ("standard", "pgd-at"), (0.2,), (0,), students=("none",)))
    default = {r.name: r.key for r in default_recipes("digits")}
    by_name = {r.name: r for r in recipes}
    assert by_name["pgd-at-eps0.2-s0"].key == default["pgd-at"]
    assert by_name["student:pgd-at-eps0.2-s0:none"].key == default["student:pgd-at:none"]
    assert by_name["student:pgd-at-eps0.2-s0:none"].teacher.name == "pgd-at-eps0.2-s0"
    assert train_eps_of(by_name["student:pgd-at-eps0.2-s0:none"]) == 0.2


@pytest.mark.parametrize("grid, message", [
    (SweepGrid("digits", ("pgd",)), "--methods: unknown pgd"),
    (SweepGrid("digits", ()), "--methods"),
    (SweepGrid("digits", ("pgd-at",), (0.0,)), "--train-eps"),
    (SweepGrid("digits", ("pgd-at",), (1.5,)), "--train-eps"),
    (SweepGrid("digits", ("pgd-at",), seeds=()), "--seeds"),
    (SweepGrid("digits", ("pgd-at",), archs=("resnet9000",)), "--archs: unknown resnet9000"),
    (SweepGrid("digits", ("pgd-at",), students=("shuffle",)), "--students: unknown manipulation shuffle"),
    (SweepGrid("digits", ("pgd-at",), tuple(i / 1000 for i in range(1, 200)), tuple(range(3))), "split it"),
])
def test_a_bad_sweep_is_refused_with_what_to_do(grid, message):
    with pytest.raises(LogitscopeError, match=message):
        sweep_recipes(grid)


def test_swept_models_are_remembered_and_the_catalog_lists_each_model_once():
    recipes = sweep_recipes(SweepGrid("digits", ("standard", "pgd-at"), (0.1, 0.2), (0,)))
    assert swept_recipes("digits") == []
    remember_sweep("digits", recipes)
    remember_sweep("digits", recipes[:1])  # again: nothing doubles
    back = swept_recipes("digits")
    assert [(r.name, r.key) for r in back] == [(r.name, r.key) for r in recipes]
    catalog = views.catalog("digits")
    assert "pgd-at-eps0.1-s0" in catalog and "standard-s0" not in catalog  # standard-s0 *is* "standard"
    assert len({r.key for r in catalog.values()}) == len(catalog)


def test_an_unreadable_sweep_registry_says_what_to_do(isolated_cache):
    path = isolated_cache / "sweeps" / "digits.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(LogitscopeError, match="delete it and run the sweep again"):
        swept_recipes("digits")


def _record(name, log, threads_seen, report):
    threads_seen.append(torch.get_num_threads())
    report("working", 0.5)
    log.append(name)
    return name.upper()


def test_the_local_executor_runs_tasks_in_dependency_order_with_its_threads():
    log, threads = [], []
    tasks = [Task("c", _record, ("c", log, threads), after=(1, 2)), Task("a", _record, ("a", log, threads)),
             Task("b", _record, ("b", log, threads), after=(1,))]
    seen = []
    out = LocalExecutor(threads=1).run(tasks, progress=lambda i, what, f: seen.append((i, what, f)))
    assert out == ["C", "A", "B"] and log == ["a", "b", "c"]
    assert threads == [1, 1, 1] and (1, "working", 0.5) in seen


def test_the_task_graph_trains_a_teacher_before_its_student_and_evaluates_each_model_after_training():
    recipes = sweep_recipes(SweepGrid("digits", ("pgd-at",), (0.1,), (0,), students=("none",)))
    recipes.append(zoo_recipe("Wong2020Fast"))  # a zoo model has nothing to train; it is not a digits model
    s = setting("digits", [0.1])
    local = recipes[:2]
    units = units_of(s, local)
    todo, what = fanout.tasks(s, local, units, set(units), "cpu")
    labels = [t.label for t in todo]
    teacher, student = labels.index("train pgd-at-eps0.1-s0"), labels.index("train student:pgd-at-eps0.1-s0:none")
    assert todo[student].after == (teacher,)
    assert todo[student].needs == (checkpoint_path(recipes[0]).relative_to(cache_dir()).as_posix(),)
    evals = [t for t in todo if t.label.startswith("evaluate")]
    assert len(evals) == 2 and all(len(t.args[2]) == 2 for t in evals)  # one task per model: eps 0 and 0.1
    assert {t.after for t in evals} == {(teacher,), (student,)}
    assert not any(t.gpu for t in todo)


def test_files_come_back_from_a_private_cache_without_locks_or_downloads(tmp_path):
    root = tmp_path / "private"
    (root / "logits" / "k").mkdir(parents=True)
    (root / "logits" / "k" / "e.safetensors").write_bytes(b"entry")
    (root / "logits" / "k" / "e.safetensors.lock").write_bytes(b"")
    (root / "models" / "robustbench" / "cifar10").mkdir(parents=True)
    (root / "models" / "robustbench" / "cifar10" / "big.pt").write_bytes(b"weights")
    files = collect_files(root)
    assert files == {"logits/k/e.safetensors": b"entry"}
    cache = tmp_path / "cache"
    assert write_files(files, cache) == 1 and write_files(files, cache) == 0  # the same bytes: kept
    assert write_files({"logits/k/e.safetensors": b"fixed"}, cache) == 1  # other bytes (a broken copy): replaced
    assert read_files(["logits/k/e.safetensors", "missing/file"], cache) == {"logits/k/e.safetensors": b"fixed"}


@pytest.mark.parametrize("bad", ["../outside", "/etc/passwd", "a/../../b", ""])
def test_a_returned_file_cannot_point_outside_the_cache(tmp_path, bad):
    with pytest.raises(LogitscopeError, match="not a plain path inside the cache"):
        write_files({bad: b"x"}, tmp_path)


def test_neither_the_app_nor_the_local_executor_imports_ray():
    code = ("import sys\n"
            "import core.app.views, core.app.prepare, core.app.demo, core.study.fanout, core.study.executors\n"
            "import core.cli.commands, core.__main__\n"
            "assert 'ray' not in sys.modules, 'ray was imported'\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
