"""The Ray executor against a local Ray (2 CPUs, started once per session): the same cache entries as the local
executor, with and without a shared filesystem; a worker killed mid-task is retried; Ctrl-C exits 130 with
nothing partial in the cache, and the same command resumes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from safetensors import safe_open

from core.engine.logits import entry_ok
from core.errors import LogitscopeError
from core.study import fanout
from core.study.executors import LocalExecutor, Task
from core.study.hyper import eval_attack, eval_data
from core.study.precompute import Setting, evaluate, precompute
from core.study.recipes import Recipe, is_trained, student_recipe
from core.study.sweep import SweepGrid, sweep_recipes

ray = pytest.importorskip("ray")
from core.study.executor_ray import RayExecutor  # noqa: E402  (needs Ray, skipped above without it)

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def quick(recipe: Recipe, epochs: int) -> Recipe:
    return replace(recipe, spec=replace(recipe.spec, train=replace(recipe.spec.train, epochs=epochs)))


def tiny_sweep(epochs: int = 2) -> list[Recipe]:
    """4 small models: standard, PGD-AT at two training epsilons, and a student of the first PGD-AT model."""
    teachers = [quick(r, epochs) for r in sweep_recipes(SweepGrid("digits", ("standard", "pgd-at"), (0.1, 0.2), (0,)))]
    return teachers + [quick(student_recipe(teachers[1], "none"), epochs)]


def entries(root: Path) -> dict[str, object]:
    """Every cache file by relative path: tensors and metadata of safetensors entries, bytes of the rest."""
    out = {}
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root).as_posix()
        if not f.is_file() or f.name.endswith(".lock") or rel.startswith("sweeps/"):
            continue
        if f.suffix == ".safetensors":
            with safe_open(f, "pt") as t:
                out[rel] = (t.metadata(), {k: t.get_tensor(k).numpy().tobytes() for k in t.keys()})
        else:
            out[rel] = f.read_bytes()
    return out


def test_the_ray_executor_writes_the_entries_the_local_one_does(ray_cluster, tmp_path, monkeypatch):
    recipes = tiny_sweep()
    caches = {}
    for name, executor in [("local", LocalExecutor(threads=1)), ("ray", RayExecutor(threads=1)),
                           ("ray-no-shared-fs", RayExecutor(threads=1, shared_fs=False))]:
        caches[name] = tmp_path / name
        monkeypatch.setenv("LOGITSCOPE_CACHE", str(caches[name]))
        out = fanout.run(executor, "digits", recipes, eps=[0.05, 0.1], steps=5)
        assert sorted(out.trained) == sorted(r.name for r in recipes), name
        assert len(out.computed) == 4 * 3 and not out.skipped, name  # 4 models x (clean, 0.05, 0.1)
        assert executor.retried == {}
    local = entries(caches["local"])
    assert sum(k.startswith("models/") for k in local) == 4
    assert sum(k.startswith("logits/") for k in local) == 4 * 3 + 1  # and the teacher's logits for its student
    assert entries(caches["ray"]) == local
    assert entries(caches["ray-no-shared-fs"]) == local
    again = fanout.run(RayExecutor(threads=1, shared_fs=False), "digits", recipes, eps=[0.05, 0.1], steps=5)
    assert not again.computed and not again.trained and len(again.skipped) == 12  # resumed: nothing left to do


def test_a_worker_killed_mid_task_is_retried_and_the_cache_is_complete(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("LOGITSCOPE_CACHE", str(tmp_path / "cache"))
    recipe = quick(sweep_recipes(SweepGrid("digits", ("pgd-at",), (0.1,), (0,)))[0], 30)  # long enough to be hit
    executor, result = RayExecutor(threads=1), {}

    def work() -> None:
        try:
            result["out"] = fanout.run(executor, "digits", [recipe], eps=[0.1], steps=5)
        except BaseException as exc:  # noqa: BLE001  (reported by the test below)
            result["error"] = exc

    worker = threading.Thread(target=work)
    worker.start()
    killed, deadline = None, time.monotonic() + 180
    while killed is None and time.monotonic() < deadline and worker.is_alive():
        board = executor.board
        if board is not None:
            reports, attempts, pids = ray.get(board.snapshot.remote())
            if reports.get(0, ("", 0.0))[1] > 0.05:  # the training task is under way
                killed = pids[0]
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    worker.join(timeout=600)
    assert killed is not None, "the training task never reported progress"
    assert "error" not in result, result.get("error")
    assert executor.retried == {f"train {recipe.name}": 2}
    out = result["out"]
    assert out.trained == [recipe.name] and len(out.computed) == 2
    data, attack = eval_data("digits"), eval_attack("digits", steps=5)
    assert is_trained(recipe) and entry_ok(recipe.key, data, None) and entry_ok(recipe.key, data, attack.at(0.1))


def _sweep(cache: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "LOGITSCOPE_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "core", "sweep", "--methods", "standard", "--seeds", "0,1,2", "--eps", "0.1",
           "--steps", "5", "--executor", "ray", "--quiet", "--json", str(out)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_ctrl_c_interrupts)


def _ctrl_c_interrupts() -> None:
    """In the child: Ctrl-C (SIGINT) interrupts, as in a terminal, even when this test runs with SIGINT ignored
    (a job started in the background inherits an ignored SIGINT, and Python keeps it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_a_ray_sweep_with_exit_130_and_the_same_command_resumes(tmp_path):
    cache, summary = tmp_path / "cache", tmp_path / "sweep.json"
    first = _sweep(cache, summary)
    models = cache / "models" / "digits"
    deadline = time.monotonic() + 300
    while first.poll() is None and time.monotonic() < deadline and not any(models.glob("*.pt")):
        time.sleep(0.2)
    assert first.poll() is None, first.communicate()
    first.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    assert "run the same command again to resume" in err
    assert not list(cache.rglob(".tmp-*"))  # nothing half-written
    assert not summary.exists()
    finished = {p.name for p in models.glob("*.pt")}
    assert 1 <= len(finished) < 3

    second = _sweep(cache, summary)
    out, err = second.communicate(timeout=600)
    assert second.returncode == 0, err
    result = json.loads(summary.read_text())
    assert [m["name"] for m in result["models"]] == ["standard-s0", "standard-s1", "standard-s2"]
    assert len(result["trained"]) == 3 - len(finished)  # the finished ones were reused
    assert all(m["robust"]["0.1"]["reliable"] and m["robust"]["0.1"]["estimate"] is not None for m in result["models"])
    assert "standard-s2" in out


def test_chunks_computed_without_a_shared_filesystem_are_joined_by_the_driver(ray_cluster, tmp_path, monkeypatch):
    """360 test images in chunks of 128: three tasks per epsilon, each returning its part; the driver joins them
    into the entry a single pass writes (`precompute` in this process, on the same trained model)."""
    recipe = tiny_sweep()[0]
    monkeypatch.setenv("LOGITSCOPE_CACHE", str(tmp_path / "one-pass"))
    precompute("digits", [recipe], eps=[0.1], steps=5)
    trained = tmp_path / "one-pass" / "models"
    monkeypatch.setenv("LOGITSCOPE_CACHE", str(tmp_path / "chunked"))
    shutil.copytree(trained, tmp_path / "chunked" / "models")
    out = fanout.run(RayExecutor(threads=1, shared_fs=False), "digits", [recipe], eps=[0.1], steps=5, chunk_images=100)
    assert len(out.computed) == 2 * 3 and not out.trained  # (clean, 0.1) x 3 chunks
    assert not (tmp_path / "chunked" / "precompute").exists()  # the parts are gone once joined
    one, chunked = entries(tmp_path / "one-pass"), entries(tmp_path / "chunked")
    assert {k: v for k, v in one.items() if k.startswith("logits/")} == \
        {k: v for k, v in chunked.items() if k.startswith("logits/")}


def test_an_error_in_a_ray_task_stops_the_run_with_its_own_message(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("LOGITSCOPE_CACHE", str(tmp_path / "cache"))
    missing = Setting(f"npz:{tmp_path / 'missing.npz'}", (0.0,))  # a dataset file that is not there
    task = Task("evaluate on missing data", evaluate, (missing, tiny_sweep()[0], (), "cpu"))
    executor = RayExecutor(threads=1)
    with pytest.raises(LogitscopeError, match="missing.npz"):
        executor.run([task])
    assert executor.retried == {}  # an exception in the task itself is not retried
