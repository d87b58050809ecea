"""The distillation lab: specs, one real run, and the run table that survives restarts."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pandas as pd
import pytest

from core.app import charts, jobs, lab
from core.config import cache_dir, stable_key
from core.engine import stats
from core.engine.logits import read
from core.errors import LogitscopeError
from core.study import evidence
from core.study.hyper import eval_attack, eval_data, hyper
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
    assert list(shown.columns[shown.columns.str.startswith("acc @")]) == ["acc @ eps 0.1 (PGD-20, upper bound)",
                                                                          "acc @ eps 0.2 (PGD-20, upper bound)"]
    curve = lab.accuracy_long(lab.load_runs("digits"))
    assert len(curve) == 6 and set(curve["eps"]) == {0.0, 0.1, 0.2}
    lab.delete_runs(["r2"])
    assert list(lab.load_runs()["run"]) == ["r1"]


def test_demo_visitors_see_the_bundle_and_their_own_runs_and_remove_only_theirs():
    lab.record(_row("b1"))  # the bundle's run: no owner
    lab.record(_row("a1", owner="alice"))
    lab.record(_row("b1", owner="bob", clean_accuracy=0.4))  # bob reruns the bundled configuration: his own row
    assert list(lab.load_runs("digits")["run"]) == ["b1", "a1", "b1"]  # a local app sees every row
    alice, bob = lab.load_runs("digits", "alice"), lab.load_runs("digits", "bob")
    assert list(zip(alice["run"], alice["owner"])) == [("b1", ""), ("a1", "alice")]
    assert list(zip(bob["run"], bob["owner"])) == [("b1", ""), ("b1", "bob")]
    assert list(lab.display_table(bob, "bob")["whose"]) == ["yours", "bundled (read-only)"]
    assert "whose" not in lab.display_table(lab.load_runs("digits")).columns
    assert lab.delete_runs(["a1", "b1"], owner="bob") == 1  # bob's b1 only: not alice's run, not the bundle's
    assert list(zip(lab.load_runs()["run"], lab.load_runs()["owner"])) == [("b1", ""), ("a1", "alice")]
    assert lab.delete_runs(["b1"], owner="alice") == 0  # the bundled run is read-only for every visitor
    assert [r.name for r in lab.run_recipes("digits", trained=False, owner="bob")] == ["lab:pgd-at:none"]


def test_the_demo_keeps_a_bounded_number_of_visitor_runs(monkeypatch):
    monkeypatch.setattr("core.app.lab_table.SHARED_RUNS", 3)
    lab.record(_row("bundled"))
    for i in range(5):
        lab.record(_row(f"v{i}", owner=f"visitor{i % 2}"))
    runs = lab.load_runs()
    assert list(runs["run"]) == ["bundled", "v2", "v3", "v4"]  # the oldest visitors' runs went, the bundle's stays
    lab.record(_row("local"))  # a local app's runs are never dropped
    assert len(lab.load_runs()) == 5


def test_a_reused_run_says_so_in_the_table():
    lab.record(_row("r1", reused=True))
    lab.record(_row("r2", reused=False))
    lab.record(_row("r3"))  # recorded before the column: unknown
    shown = lab.display_table(lab.load_runs())
    assert list(shown["students"]) == ["", "trained", "reused"]


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


def test_replicates_are_specs_with_consecutive_seeds_and_old_run_ids_stay():
    spec = lab.LabSpec("digits", "pgd-at", "shuffle_nonmax", epochs=3, seed=4, replicates=3)
    assert [r.seed for r in spec.replicas()] == [4, 5, 6] and {r.replicates for r in spec.replicas()} == {1}
    assert len({r.recipe().key for r in spec.replicas()}) == 3
    assert {r.teacher_recipe().key for r in spec.replicas()} == {spec.teacher_recipe().key}  # the seed-0 teacher
    base = spec.baseline_specs()
    assert (base["untouched"].teacher, base["untouched"].manipulation, base["standard"].teacher) == \
        ("pgd-at", "none", "standard")
    assert base["untouched"].epochs == 3 and base["untouched"].seed == 4  # the run's settings, nothing manipulated
    attack = eval_attack("digits")
    one = lab.LabSpec(seed=4)
    old = {k: v for k, v in dataclasses.asdict(one).items() if k != "replicates"}  # a spec recorded before replicates
    assert lab.run_id(one, attack) == stable_key({"lab": old, "attack": attack.key()})
    assert lab.run_id(dataclasses.replace(one, replicates=2), attack) != lab.run_id(one, attack)
    for bad in (0, 6):
        with pytest.raises(LogitscopeError, match="replicates"):
            lab.LabSpec(replicates=bad).replicas()


def test_evidence_fields_hold_intervals_and_paired_differences():
    rng = np.random.default_rng(0)
    run = [rng.random(300) < 0.5 for _ in range(3)]
    ref = [rng.random(300) < 0.7 for _ in range(3)]
    refs = {"untouched": (list("def"), ref), "standard": (list("abc"), run)}
    f = lab.evidence_fields([0, 1, 2], list("abc"), run, refs, "Linf AutoAttack, eps 0.1", 0.1, n_boot=500)
    means = [c.mean() for c in run]
    assert f["replicates"] == 3 and json.loads(f["seeds"]) == [0, 1, 2]
    assert f["robust_lo"] <= np.mean(means) <= f["robust_hi"] and f["robust_reliable"] == pytest.approx(np.mean(means))
    base = {b["role"]: b for b in json.loads(f["baseline_results"])}
    d = base["untouched"]["difference"]
    assert d["estimate"] == pytest.approx(np.mean(means) - np.mean([c.mean() for c in ref]))
    assert d["interval"][1] < 0 and base["untouched"]["verdict"] == "holds"  # 0.5 against 0.7 on 900 images
    assert d["n_seeds"] == 3 and d["n"] == 900
    assert base["standard"]["verdict"] == "the run is this baseline" and base["standard"]["difference"]["estimate"] == 0
    one = lab.evidence_fields([0], ["a"], run[:1], {}, "Linf AutoAttack, eps 0.1", 0.1, n_boot=500)
    assert one["replicates"] == 1 and one["robust_lo"] < one["robust_reliable"] < one["robust_hi"]  # images only


def test_the_interval_chart_draws_each_run_beside_its_baselines():
    rng = np.random.default_rng(1)
    correct = [rng.random(100) < 0.5 for _ in range(2)]
    lab.record(_row("r", **lab.evidence_fields([0, 1], ["a", "b"], correct,
                                               {"untouched": (["c", "d"], correct)}, "AA", 0.1, n_boot=100)))
    frame = lab.interval_frame(lab.load_runs())
    assert frame["model"].tolist() == ["the run's student", "the untouched teacher's student"]
    assert frame["run"].tolist() == ["lab:pgd-at:none (2 seeds)"] * 2 and (frame["lo"] <= frame["hi"]).all()
    spec = charts.interval_chart(frame, "robust accuracy (AutoAttack @0.1)").to_dict()
    assert spec["layer"][0]["mark"]["type"] == "rule" and spec["layer"][1]["encoding"]["x"]["field"] == "estimate"


def test_an_old_row_without_the_new_columns_loads_and_renders():
    lab.table_path().parent.mkdir(parents=True)
    pd.DataFrame([_row("old")]).to_parquet(lab.table_path())  # the table as runs before replicates wrote it
    runs = lab.load_runs("digits")
    assert runs["replicates"].tolist() == [1] and json.loads(runs["seeds"][0]) == [0]
    assert runs["robust_reliable"].isna().all() and runs["baseline_results"].tolist() == [None]
    shown = lab.display_table(runs)
    assert shown["replicates"].tolist() == [1] and shown["seeds"].tolist() == ["0"]
    aa = [c for c in shown.columns if c.startswith("robust acc. (AutoAttack")]
    assert len(aa) == 1 and shown[aa[0]].isna().all()  # no interval, and no crash
    assert lab.interval_frame(runs).empty and len(lab.accuracy_long(runs)) == 3
    assert lab.summary(runs.iloc[0])["robust"] is None
    lab.record(_row("new", seed=1, **lab.evidence_fields([1], ["k"], [np.ones(20, bool)], {}, "AA", 0.1, n_boot=100)))
    both = lab.load_runs("digits")  # old and new rows in one file, read back by a new process
    assert pd.read_parquet(lab.table_path())["run"].tolist() == ["old", "new"]
    assert both["replicates"].tolist() == [1, 1] and both["robust_reliable"].isna().tolist() == [True, False]
    shown = lab.display_table(both)  # newest first
    assert shown["robust acc. (AutoAttack @0.1), 95% interval"].tolist()[0] == "1.000 [1.000, 1.000]"


def _survivors(key: str, ev: evidence.Evidence) -> np.ndarray:
    """(N,) bool from the cache: the test images AutoAttack did not fool at the findings' eps."""
    rec = read(key, eval_data("digits"), ev.reliable.at(ev.eps))
    return (rec.logits.argmax(1) == rec.labels).numpy()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_run_with_three_replicates_records_three_students_with_intervals(app_cache, workers, monkeypatch):
    """One real run (1 epoch per student): 3 students, 6 baseline students, PGD-20 grid and AutoAttack; in this
    process, and in two worker processes (`core.app.lab_progress.worker_units`)."""
    monkeypatch.setenv("LOGITSCOPE_APP_WORKERS", workers)
    jobs.clear()
    spec = lab.LabSpec("digits", "pgd-at", "flatten_nonmax", temperature=3.0, epochs=1, seed=3, replicates=3)
    attack = eval_attack("digits")
    grid = hyper("digits").eps_grid
    job = jobs.submit("reps", lambda ctx: lab.run(ctx, spec, attack, grid), "three replicates")
    assert job.wait(600), "the run did not finish in ten minutes"
    s = job.snapshot()
    assert s.status == jobs.DONE, s.error
    row = job.result
    ev = evidence.evidence("digits", "linf", 20)
    reps = json.loads(row["replicate_results"])
    keys = json.loads(row["student_keys"])
    assert [r["seed"] for r in reps] == json.loads(row["seeds"]) == [3, 4, 5] and row["replicates"] == 3
    assert keys == [r["key"] for r in reps] == [r.recipe().key for r in spec.replicas()] and len(set(keys)) == 3
    assert all(is_trained(r.recipe()) for r in spec.replicas())
    accs = [r["reliable_accuracy"] for r in reps]
    assert row["robust_lo"] <= np.mean(accs) <= row["robust_hi"]
    assert row["robust_reliable"] == pytest.approx(np.mean(accs))
    for r in reps:  # the reliable attack is never weaker than PGD-20 at the same eps
        assert r["reliable_accuracy"] <= r["pgd_accuracy"][f"{ev.eps:g}"], r
        assert set(r["pgd_accuracy"]) == {f"{e:g}" for e in grid}
    assert row["reliable_eps"] == ev.eps and row["reliable_attack"] == ev.reliable.at(ev.eps).describe()
    assert json.loads(row["robust_accuracy"])["0.1"] == pytest.approx(np.mean([r["pgd_accuracy"]["0.1"] for r in reps]))
    correct = [_survivors(k, ev) for k in keys]
    assert [c.mean() for c in correct] == pytest.approx(accs)
    base = {b["role"]: b for b in json.loads(row["baseline_results"])}
    assert set(base) == {"untouched", "standard"}
    for role, b in base.items():  # the same seeds, each its own student, paired with the run's on the same images
        assert b["keys"] == [r.recipe().key for r in spec.baseline_specs()[role].replicas()]
        assert len(set(b["keys"]) | set(keys)) == 6
        ref = [_survivors(k, ev) for k in b["keys"]]
        assert stats.paired_difference(correct, ref).to_dict() == b["difference"]
        lo, hi = b["difference"]["interval"]
        assert lo <= b["difference"]["estimate"] <= hi and b["difference"]["n_seeds"] == 3
        assert b["verdict"] in ("holds", "reversed", "not resolved with 3 seeds")
    assert lab.load_runs("digits")["run"].tolist() == [row["run"]] == [lab.run_id(spec, attack)]
    assert [r.name for r in lab.run_recipes("digits")] == [spec.name()]  # the pickers offer the first replicate
    shown = lab.display_table(lab.load_runs("digits"))
    text = shown["robust acc. (AutoAttack @0.1), 95% interval"][0]
    assert text == f"{row['robust_reliable']:.3f} [{row['robust_lo']:.3f}, {row['robust_hi']:.3f}]"
    assert shown["the manipulation costs robustness? (verdict)"][0] == base["untouched"]["verdict"]
    print(f"3 replicates, 1 epoch: {row['seconds']:.1f} s")


def test_without_pyautoattack_a_run_measures_pgd_only(app_cache, monkeypatch):
    monkeypatch.setattr(lab, "autoattack_available", lambda: False)  # a hosted demo may be deployed without it
    spec = lab.LabSpec("digits", "pgd-at", "flatten_nonmax", epochs=1, seed=8, replicates=2)
    job = jobs.submit("pgd", lambda ctx: lab.run(ctx, spec, eval_attack("digits"), hyper("digits").eps_grid), "p")
    assert job.wait(120) and job.snapshot().status == jobs.DONE, job.snapshot().error
    runs = lab.load_runs("digits")
    assert runs["replicates"].tolist() == [2] and runs["robust_reliable"].isna().all()
    assert [r["seed"] for r in json.loads(runs["replicate_results"][0])] == [8, 9]
    assert lab.display_table(runs)["acc @ eps 0.1 (PGD-20, upper bound)"].notna().all()
    assert lab.summary(runs.iloc[0])["robust"] is None


def test_cancel_stops_a_run_within_an_attack(app_cache):
    jobs.clear()
    spec = lab.LabSpec("digits", "pgd-at", "flatten_nonmax", epochs=1, seed=11, replicates=2)
    job = jobs.submit("cancel", lambda ctx: lab.run(ctx, spec, eval_attack("digits"), hyper("digits").eps_grid), "c")
    deadline = time.time() + 120
    while "AutoAttack" not in (job.snapshot().label + str(job.snapshot().stage)) and time.time() < deadline:
        time.sleep(0.05)
    job.cancel()
    asked = time.time()
    assert job.wait(60)
    assert job.snapshot().status == jobs.CANCELLED and time.time() - asked < 30
    assert lab.load_runs().empty and not is_trained(spec.replicas()[1].recipe())
