"""The distillation lab: specs, one real run, and the run table that survives restarts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from core.app import jobs, lab
from core.config import cache_dir
from core.errors import LogitscopeError
from core.study.hyper import eval_attack, hyper
from core.study.recipes import is_trained


def _row(run: str, name: str = "lab:pgd-at:none", **over) -> dict:
    row = {"run": run, "name": name, "dataset": "digits", "teacher": "pgd-at", "manipulation": "none",
           "temperature": 4.0, "hard_weight": 0.0, "fraction": 1.0, "epochs": 20, "seed": 0, "norm": "linf",
           "steps": 20, "clean_accuracy": 0.97, "robust_accuracy": json.dumps({"0": 0.97, "0.1": 0.7, "0.2": 0.1}),
           "order_agreement": 0.6, "mean_max_logit": 7.0, "mean_logit_gap": 5.0, "max_logit_ks_to_teacher": 0.2,
           "seconds": 5.0, "created": "2026-01-01T00:00:00", "student_key": "abc",
           "spec": json.dumps({"dataset": "digits", "teacher": "pgd-at", "manipulation": "none"})}
    return {**row, **over}


def test_spec_names_say_what_differs_from_the_defaults():
    base = lab.default_spec("digits")
    assert base.name() == "lab:pgd-at:none"
    spec = lab.LabSpec("digits", "trades", "shuffle_nonmax", temperature=2.0, fraction=0.5, epochs=3, seed=1)
    assert spec.name() == "lab:trades:shuffle_nonmax T=2 frac=0.5 epochs=3 seed=1"
    r = spec.recipe()
    assert r.name == spec.name() and r.role == "student" and r.teacher.name == "trades"
    d = r.spec.train.distill
    assert (d.manipulation, d.temperature, d.fraction, r.spec.train.epochs, r.spec.train.seed) == \
        ("shuffle_nonmax", 2.0, 0.5, 3, 1)
    # the default lab spec is the study's own student: same key, so its checkpoint is reused
    assert base.recipe().key == lab.baselines(base.teacher_recipe())[0].key
    # the seed is the student's: every run compares against the same, already trained teacher
    assert lab.LabSpec(seed=5).teacher_recipe().key == base.teacher_recipe().key


@pytest.mark.parametrize("spec, message", [
    (lab.LabSpec(teacher="nobody"), "Unknown teacher"),
    (lab.LabSpec(manipulation="invert"), "Unknown manipulation"),
    (lab.LabSpec(temperature=0.0), "temperature"),
    (lab.LabSpec(hard_weight=1.5), "hard_weight"),
    (lab.LabSpec(epochs=0), "epochs"),
])
def test_bad_specs_raise_user_errors(spec, message):
    with pytest.raises(LogitscopeError, match=message):
        spec.recipe()


def test_baselines_of_each_teacher():
    names = lambda t: [r.name for r in lab.baselines(lab.LabSpec(teacher=t).teacher_recipe())]
    assert names("pgd-at") == ["student:pgd-at:none", "student:pgd-at:hard_labels", "student:standard:none"]
    assert names("trades") == ["student:pgd-at:hard_labels", "student:standard:none"]


def test_the_run_table_survives_a_restart_and_replaces_a_rerun():
    assert lab.load_runs("digits").empty
    lab.record(_row("r1"))
    lab.record(_row("r2", name="lab:pgd-at:flatten_nonmax", manipulation="flatten_nonmax"))
    lab.record(_row("r1", clean_accuracy=0.5))  # the same run again replaces its row
    assert lab.table_path() == cache_dir() / "lab" / "runs.parquet" and lab.table_path().is_file()
    runs = pd.read_parquet(lab.table_path())  # what a new process would read
    assert list(runs["run"]) == ["r2", "r1"] and runs.set_index("run").loc["r1", "clean_accuracy"] == 0.5
    assert lab.load_runs("cifar10").empty
    shown = lab.display_table(lab.load_runs("digits"))
    assert list(shown["run"]) == ["r1", "r2"]  # newest first
    assert list(shown.columns[shown.columns.str.startswith("acc @")]) == ["acc @ eps 0.1", "acc @ eps 0.2"]
    curve = lab.accuracy_long(lab.load_runs("digits"))
    assert len(curve) == 6 and set(curve["eps"]) == {0.0, 0.1, 0.2}
    lab.delete_runs(["r2"])
    assert list(lab.load_runs()["run"]) == ["r1"]


def test_a_corrupt_table_gives_a_message_that_says_what_to_do():
    lab.table_path().parent.mkdir(parents=True)
    lab.table_path().write_bytes(b"not parquet")
    with pytest.raises(LogitscopeError, match="delete it"):
        lab.load_runs()


def test_agreement_frame_is_one_for_the_teacher_itself():
    rng = np.random.default_rng(0)
    t = rng.standard_normal((10, 5))
    labels = rng.integers(0, 5, 10)
    frame = lab.agreement_frame(t, {"same": t, "reversed": -t}, labels)
    assert np.allclose(frame.loc[frame.model == "same", "tau"], 1)
    assert np.allclose(frame.loc[frame.model == "reversed", "tau"], -1)


def test_a_tiny_run_trains_evaluates_and_records(app_cache):
    jobs.clear()
    spec = lab.LabSpec("digits", "pgd-at", "flatten_nonmax", temperature=3.0, epochs=1, seed=3)
    attack = eval_attack("digits")
    grid = hyper("digits").eps_grid
    job = jobs.submit("tiny", lambda ctx: lab.run(ctx, spec, attack, grid), "tiny run")
    assert job.wait(120), "the tiny run did not finish in two minutes"
    s = job.snapshot()
    assert s.status == jobs.DONE, s.error
    row = job.result
    assert row["run"] == lab.run_id(spec, attack) and row["name"] == spec.name()
    assert set(json.loads(row["robust_accuracy"])) == {f"{e:g}" for e in grid}
    assert -1 <= row["order_agreement"] <= 1 and 0 <= row["clean_accuracy"] <= 1
    assert is_trained(spec.recipe())
    assert [r.name for r in lab.run_recipes("digits")] == [spec.name()]
    assert lab.load_runs("digits")["run"].tolist() == [row["run"]]
