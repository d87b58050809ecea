"""`python -m core sweep` and the executor flags of `precompute`, as users run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.__main__ import main
from core.app import views

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], cache: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOGITSCOPE_CACHE": str(cache), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["--methods", "pgd"], "--methods: unknown pgd; choose from standard, pgd-at, trades, fast-at"),
    (["--train-eps", "0,0.1"], "--train-eps: each training epsilon"),
    (["--train-eps", "abc"], "is not a comma-separated list of numbers"),
    (["--seeds", "0,-1"], "each 0 or more"),
    (["--seeds", "x"], "comma-separated list of whole numbers"),
    (["--archs", "resnet9000"], "--archs: unknown resnet9000"),
    (["--students", "shuffle"], "--students: unknown manipulation shuffle"),
    (["--eps", "-0.1"], "--eps"),
    (["--dataset", "nope"], "unknown dataset 'nope'"),
    (["--no-shared-fs"], "--ray-address and --no-shared-fs need --executor ray"),
    (["--ray-address", "auto"], "--ray-address and --no-shared-fs need --executor ray"),
    (["--threads", "0"], "--threads"),
    (["--executor", "ray", "--ray-address", "head-node"], "--ray-address 'head-node' is not HOST:PORT"),
    (["--executor", "ray", "--ray-address", "ray://head:99999"], "is not HOST:PORT"),
    (["--executor", "spark"], "invalid choice: 'spark'"),
])
def test_a_bad_sweep_exits_2_with_what_to_do_before_any_work(args, message, capsys, isolated_cache):
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", *args])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not (isolated_cache / "models").exists()


def test_a_sweep_json_path_that_is_a_folder_is_refused_before_any_work(tmp_path, capsys, isolated_cache):
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "--methods", "standard", "--json", str(tmp_path)])
    assert exit_.value.code == 2 and "is a directory" in capsys.readouterr().err
    assert not (isolated_cache / "models").exists()


def test_precompute_with_ray_missing_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    monkeypatch.delitem(sys.modules, "core.study.executor_ray", raising=False)
    code = main(["precompute", "--models", "standard", "--eps", "0.1", "--executor", "ray", "--quiet"])
    assert code == 1
    assert "--executor ray needs Ray" in capsys.readouterr().err


def test_a_ray_address_where_nothing_answers_fails_at_once_with_what_to_do(capsys):
    pytest.importorskip("ray")
    code = main(["precompute", "--models", "standard", "--eps", "0.1", "--executor", "ray", "--ray-address",
                 "127.0.0.1:9", "--quiet"])  # the discard port: nothing listens there
    assert code == 1
    assert "Nothing answers at --ray-address 127.0.0.1:9" in capsys.readouterr().err


@pytest.mark.slow
def test_a_local_sweep_trains_evaluates_summarises_and_is_listed_by_the_app(tmp_path, monkeypatch):
    cache, out = tmp_path / "cache", tmp_path / "out" / "sweep.json"
    args = ["sweep", "--methods", "standard", "--seeds", "1", "--eps", "0.1", "--steps", "5", "--quiet",
            "--threads", "1", "--json", str(out)]
    proc = _run(args, cache)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(out.read_text())
    (model,) = summary["models"]
    assert (model["name"], model["method"], model["seed"], model["train_eps"]) == ("standard-s1", "standard", 1, 0.0)
    robust = model["robust"]["0.1"]
    assert robust["reliable"] and robust["attack"].startswith("Linf AutoAttack")
    lo, hi = robust["interval"]
    assert lo <= robust["estimate"] <= hi and 0 <= lo < hi <= 1
    assert model["clean_accuracy"]["estimate"] > 0.9 and model["mean_max_logit"]["estimate"] > 0
    assert summary["trained"] == ["standard-s1"]
    assert "standard-s1" in proc.stdout and "Spearman" in proc.stdout
    again = _run(args, cache)  # resumable: everything is cached now
    assert again.returncode == 0 and json.loads(out.read_text())["trained"] == []
    monkeypatch.setenv("LOGITSCOPE_CACHE", str(cache))
    assert "standard-s1" in views.catalog("digits")  # the app lists the swept model


@pytest.mark.slow
def test_precompute_on_the_local_executor_with_threads(tmp_path):
    proc = _run(["precompute", "--models", "standard", "--eps", "0.1", "--steps", "5", "--threads", "1", "--quiet"],
                tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    assert "computed 2 units, 0 already cached; trained standard" in proc.stdout
