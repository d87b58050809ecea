"""The lab page with replicates, through AppTest: the control from a link, intervals and attack names in the table.

The rows here are written with the lab's own functions from made-up per-image results (a real run is
tests/test_app_lab.py's), so the page is tested in seconds; one is a row as runs before replicates wrote it.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from apptest import open_page, texts

from core.app import jobs, lab
from core.study.hyper import eval_attack

AA = "robust acc. (AutoAttack @0.1), 95% interval"


@pytest.fixture(autouse=True)
def no_jobs_left():
    jobs.clear()
    yield
    jobs.clear()


def record_runs() -> lab.LabSpec:
    """An old-format run, and a 3-replicate run of the page's default configuration (whose first student the
    study trained: the page shows its comparison too). Returns that spec."""
    old = {"run": "old-run", "name": "lab:pgd-at:flatten_nonmax", "dataset": "digits", "teacher": "pgd-at",
           "manipulation": "flatten_nonmax", "temperature": 4.0, "hard_weight": 0.0, "fraction": 1.0, "epochs": 20,
           "seed": 0, "norm": "linf", "steps": 20, "clean_accuracy": 0.97,
           "robust_accuracy": json.dumps({"0": 0.97, "0.1": 0.7, "0.2": 0.1}), "order_agreement": 0.6,
           "mean_max_logit": 7.0, "mean_logit_gap": 5.0, "max_logit_ks_to_teacher": 0.2, "seconds": 5.0,
           "created": "2026-01-01T00:00:00", "student_key": "abc",
           "spec": json.dumps({"dataset": "digits", "teacher": "pgd-at", "manipulation": "flatten_nonmax"})}
    attack = eval_attack("digits")
    before = dataclasses.replace(lab.default_spec("digits"), manipulation="flatten_nonmax")
    old["run"] = lab.run_id(before, attack)  # the id it had then: one replicate leaves it unchanged
    lab.table_path().parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([old]).to_parquet(lab.table_path())
    spec = dataclasses.replace(lab.default_spec("digits"), manipulation="shuffle_nonmax", replicates=3)
    rng = np.random.default_rng(0)
    run, ref, std = ([rng.random(360) < p for _ in range(3)] for p in (0.55, 0.7, 0.3))
    keys = [r.recipe().key for r in spec.replicas()]
    fields = lab.evidence_fields([0, 1, 2], keys, run, {"untouched": (["u0", "u1", "u2"], ref),
                                                        "standard": (["s0", "s1", "s2"], std)},
                                 "Linf AutoAttack (APGD-CE + APGD-T, 100 iterations), eps 0.1", 0.1, n_boot=500)
    lab.record({**old, "run": lab.run_id(spec, attack), "name": spec.name(), "manipulation": spec.manipulation,
                "student_key": keys[0], "spec": json.dumps(dataclasses.asdict(spec)), **fields})
    return spec


def test_the_replicates_control_reads_the_link_and_ignores_bad_values(app_cache):
    at = open_page("lab", {"reps": "3"})
    assert not at.exception, [e.message for e in at.exception]
    assert at.number_input(key="w.reps").value == 3
    assert at.query_params["reps"] in ("3", ["3"])
    for bad in ("9", "0", "2.5", "x"):
        b = open_page("lab", {"reps": bad})
        assert not b.exception, [e.message for e in b.exception]
        assert b.number_input(key="w.reps").value == 1
        assert f"reps={bad}".replace(".", "\\.") in "\n".join(c.value for c in b.sidebar.caption)


def test_the_table_shows_intervals_and_names_the_attack(app_cache):
    spec = record_runs()
    at = open_page("lab", {"reps": "3", "manip": "shuffle_nonmax"})
    assert not at.exception, [e.message for e in at.exception]
    table = at.dataframe[-1].value
    new, old = table.iloc[0], table.iloc[1]  # newest first
    assert new["name"] == spec.name() and new["replicates"] == 3 and new["seeds"] == "0, 1, 2"
    assert new[AA].count("[") == 1 and new["the manipulation costs robustness? (verdict)"] == "holds"
    assert new["difference to the untouched teacher's student (AutoAttack @0.1), paired 95% interval"].startswith("-")
    assert "acc @ eps 0.1 (PGD-20, upper bound)" in table.columns
    assert new["reliable attack"].startswith("Linf AutoAttack")
    assert old["replicates"] == 1 and pd.isna(old[AA])  # recorded before replicates: one, no interval
    labels = [m.label for m in at.metric]
    assert "Robust accuracy (AutoAttack @0.1)" in labels and "Clean accuracy" in labels
    value = at.metric[labels.index("Robust accuracy (AutoAttack @0.1)")].value
    assert value == new[AA]
    assert "**Verdict** on *the manipulation costs robustness*: **holds**" in texts(at)
    assert "PGD-20 acc. @0.1 (upper bound)" in labels
    one = open_page("lab", {"manip": "flatten_nonmax"})  # the old run's configuration: shown without an interval
    assert not one.exception, [e.message for e in one.exception]
    assert "Not run yet" not in texts(one)
    shown = {m.label: m.value for m in one.metric}
    assert shown["Robust accuracy (AutoAttack)"] == "-" and shown["Clean accuracy"] == "0.970"


def test_a_run_whose_students_were_trained_before_says_reused(app_cache):
    spec = dataclasses.replace(lab.default_spec("digits"), manipulation="shuffle_nonmax")  # the page's default
    row = {"run": lab.run_id(spec, eval_attack("digits")), "name": spec.name(), "dataset": "digits",
           "teacher": "pgd-at", "manipulation": spec.manipulation, "temperature": 4.0, "hard_weight": 0.0,
           "fraction": 1.0, "epochs": 20, "seed": 0, "norm": "linf", "steps": 20, "clean_accuracy": 0.97,
           "robust_accuracy": json.dumps({"0": 0.97, "0.1": 0.7}), "order_agreement": 0.6, "mean_max_logit": 7.0,
           "mean_logit_gap": 5.0, "max_logit_ks_to_teacher": 0.2, "seconds": 0.1, "created": "2026-01-01T00:00:00",
           "student_key": spec.recipe().key, "spec": json.dumps(dataclasses.asdict(spec)), "reused": True}
    lab.record(row)
    at = open_page("lab")
    assert not at.exception, [e.message for e in at.exception]
    shown = {m.label: m.value for m in at.metric}
    assert shown["Students"] == "reused" and "Run time" not in shown
    assert list(at.dataframe[-1].value["students"]) == ["reused"]
    lab.record({**row, "reused": False, "seconds": 42.0})
    shown = {m.label: m.value for m in open_page("lab").metric}
    assert shown["Run time"] == "42.0 s" and "Students" not in shown
