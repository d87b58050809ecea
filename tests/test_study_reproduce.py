"""The default digits study, trained once per session (the `study_cache` fixture): the paper's findings
hold with their verdicts and intervals, every robust accuracy is AutoAttack's and says so, the masking check
stays quiet, the report keeps its schema, and every number in it can be recomputed from its checkpoint."""

from __future__ import annotations

import json
import math

import pytest
import torch

from core.config import AttackSpec
from core.engine import analysis
from core.engine.attacks import pgd
from core.engine.data import load_dataset
from core.engine.distill import MANIPULATIONS
from core.engine.models import load_checkpoint
from core.study.report import format_report, reproduce

pytestmark = pytest.mark.slow

MODEL_FIELDS = {"name", "role", "method", "teacher", "manipulation", "seed", "checkpoint", "clean_accuracy",
                "clean_accuracy_interval", "robust_accuracy", "robust_accuracy_interval", "robust_accuracy_attack",
                "pgd_accuracy", "pgd_accuracy_attack", "mean_max_logit", "mean_max_logit_interval", "mean_logit_gap",
                "mean_logit_gap_interval", "mean_confidence", "mean_confidence_interval", "masking"}
# Fields the report carries beyond the documented schema (kept on purpose: the table and the pages use them).
MODEL_EXTRAS = {"key", "mean_margin", "mean_entropy"}
STUDENT_EXTRAS = {"incorrect_order_agreement"}
TOP_FIELDS = {"dataset", "eps", "attack", "attack_label", "pgd_accuracy_note", "reliable_attack",
              "reliable_attack_label", "reliable_eps", "finding_eps", "seconds", "models", "findings",
              "confidence_rank_correlation"}
TOP_EXTRAS = {"seeds", "interval", "n_images", "workers", "stage_seconds", "summary"}
CORR_FIELDS = {"a", "b", "spearman", "kendall"}
CORR_EXTRAS = {"seed"}
FINDING_FIELDS = {"id", "claim", "verdict", "effect", "interval", "n_seeds", "attack", "quantity", "n_images", "level",
                  "null", "note", "details"}

TEACHERS = ["standard", "pgd-at", "trades"]
STUDENTS = [f"student:pgd-at:{m}" for m in MANIPULATIONS] + ["student:standard:none"]


@pytest.fixture(scope="module")
def report(_study_dir):
    """The report of the cached study, through JSON as the command line writes it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOGITSCOPE_CACHE", str(_study_dir))
        return json.loads(json.dumps(reproduce("digits", seeds=(0,))))


@pytest.fixture(scope="module")
def by_name(report):
    return {m["name"]: m for m in report["models"]}


def _rob(m, eps=0.1):
    """Robust accuracy: AutoAttack's (at the findings' eps, 0.1 on digits)."""
    return m["robust_accuracy"][f"{eps:g}"]


def _pgd(m, eps):
    """PGD-20's accuracy: an upper bound on robust accuracy."""
    return m["pgd_accuracy"][f"{eps:g}"]


def test_standard_model_is_accurate_and_collapses(by_name):
    std = by_name["standard"]
    assert std["clean_accuracy"] > 0.95
    assert _pgd(std, 0.3) < 0.1 and _rob(std) < 0.7


def test_adversarial_training_buys_robustness(by_name):
    assert _rob(by_name["pgd-at"]) > 0.8 and _rob(by_name["trades"]) > 0.8
    assert _rob(by_name["pgd-at"]) > _rob(by_name["standard"]) + 0.2
    assert _pgd(by_name["pgd-at"], 0.2) > _pgd(by_name["standard"], 0.2) + 0.3 and _pgd(by_name["trades"], 0.2) > 0.5
    assert by_name["pgd-at"]["clean_accuracy"] > 0.9 and by_name["trades"]["clean_accuracy"] > 0.9


def test_finding_1_at_shrinks_max_logit_and_gap(by_name):
    std, at = by_name["standard"], by_name["pgd-at"]
    assert at["mean_max_logit"] < std["mean_max_logit"]
    assert at["mean_logit_gap"] < std["mean_logit_gap"]
    assert at["mean_confidence"] < std["mean_confidence"]


def test_finding_2_models_disagree_on_confident_samples(report):
    cors = {(c["a"], c["b"]): c for c in report["confidence_rank_correlation"]}
    c = cors[("standard", "pgd-at")]
    assert 0 < c["spearman"] < 0.9 and 0 < c["kendall"] < c["spearman"]


def test_finding_3_student_of_at_teacher_is_more_robust(by_name):
    at_student, std_student = by_name["student:pgd-at:none"], by_name["student:standard:none"]
    assert _rob(at_student) > _rob(std_student)
    assert at_student["clean_accuracy"] > 0.9
    # students trained on clean inputs only inherit some robustness, not the teacher's
    assert _rob(at_student) < _rob(by_name["pgd-at"])


def test_the_findings_have_verdicts_intervals_and_attacks(report):
    found = {f["id"]: f for f in report["findings"]}
    assert list(found) == ["1", "2", "3a", "3b-confidence", "3b-order"]
    for f in found.values():
        assert set(f) == FINDING_FIELDS, f["id"]
        assert f["verdict"] in ("holds", "reversed") or f["verdict"] == "not resolved with 1 seed"
        lo, hi = f["interval"]
        assert lo <= hi and math.isfinite(f["effect"]) and f["n_seeds"] == 1 and f["n_images"] == 360
        assert f["attack"]
    assert found["1"]["verdict"] == "holds" and found["3a"]["verdict"] == "holds"
    assert found["1"]["interval"][1] < 0 and found["3a"]["interval"][0] > 0  # the claimed side, resolved
    for fid in ("3a", "3b-confidence", "3b-order"):  # robustness findings: AutoAttack at the findings' eps
        assert found[fid]["attack"] == f"{report['reliable_attack_label']}, eps 0.1"
    assert found["1"]["attack"].startswith("none")  # clean statistics: no attack


def test_every_robust_accuracy_says_its_attack_and_comes_with_an_interval(report):
    assert report["reliable_attack"]["method"] == "autoattack-fast" and report["finding_eps"] == 0.1
    assert report["reliable_eps"] == [0.1]
    assert report["reliable_attack_label"] == "Linf AutoAttack (APGD-CE + APGD-T, 100 iterations)"
    assert report["attack_label"] == "Linf PGD-20 (CE loss, 1 start)" and "upper bound" in report["pgd_accuracy_note"]
    for m in report["models"]:
        assert m["robust_accuracy_attack"] == report["reliable_attack_label"]
        assert "PGD-20" in m["pgd_accuracy_attack"] and "upper bound" in m["pgd_accuracy_attack"]
        assert set(m["robust_accuracy"]) == set(m["robust_accuracy_interval"]) == {"0.1"}
        for eps, acc in m["robust_accuracy"].items():
            lo, hi = m["robust_accuracy_interval"][eps]
            assert 0 <= lo <= acc <= hi <= 1 and hi - lo < 0.15, (m["name"], lo, acc, hi)
        for field in ("clean_accuracy", "mean_max_logit", "mean_logit_gap", "mean_confidence"):
            lo, hi = m[f"{field}_interval"]
            assert lo <= m[field] <= hi, (m["name"], field)


def test_reliable_accuracy_is_never_above_pgds(report):
    for m in report["models"]:
        for eps, acc in m["robust_accuracy"].items():
            assert acc <= m["pgd_accuracy"][eps], (m["name"], eps, acc, m["pgd_accuracy"][eps])


def test_the_masking_check_is_quiet_on_the_default_study(report):
    for m in report["models"]:
        mask = m["masking"]
        assert mask["flagged"] is False and mask["reasons"] == [], (m["name"], mask["reasons"])
        assert mask["unbounded_pgd_accuracy"] < 0.05 and set(mask["margin_pgd_accuracy"]) == {"0.1"}
    assert all(s["masking_flagged"] == 0 for s in report["summary"].values())


def test_students_keep_or_lose_the_teachers_incorrect_class_order(by_name):
    order = {m: by_name[f"student:pgd-at:{m}"]["incorrect_order_agreement"] for m in MANIPULATIONS}
    assert all(-1 <= v <= 1 for v in order.values())
    # none and resample keep the teacher's order of the incorrect classes; shuffle and flatten destroy it
    assert order["none"] > order["shuffle_nonmax"] + 0.3
    assert order["none"] > order["flatten_nonmax"] + 0.3
    assert order["resample_nonmax"] > order["shuffle_nonmax"] + 0.3


def test_report_schema(report):
    assert set(report) == TOP_FIELDS | TOP_EXTRAS
    assert report["dataset"] == "digits"
    assert report["eps"] == sorted(report["eps"]) and report["eps"][0] == 0.0
    assert report["eps"] == [0.0, 0.05, 0.1, 0.15, 0.2, 0.3]
    assert report["attack"]["norm"] == "linf" and report["attack"]["steps"] == 20
    assert isinstance(report["seconds"], float) and report["seconds"] >= 0
    assert report["n_images"] == 360 and report["interval"]["level"] == 0.95
    names = [m["name"] for m in report["models"]]
    assert names == TEACHERS + STUDENTS and list(report["summary"]) == names
    labels = {f"{e:g}" for e in report["eps"] if e > 0}
    for m in report["models"]:
        extras = MODEL_EXTRAS | (STUDENT_EXTRAS if m["role"] == "student" else set())
        assert set(m) == MODEL_FIELDS | extras, m["name"]
        assert m["role"] in ("standard", "adversarial", "student")
        assert m["seed"] == 0 and isinstance(m["checkpoint"], str)
        assert set(m["pgd_accuracy"]) == labels
        for acc in [m["clean_accuracy"], *m["robust_accuracy"].values(), *m["pgd_accuracy"].values()]:
            assert isinstance(acc, float) and 0.0 <= acc <= 1.0
        for f in ("mean_max_logit", "mean_logit_gap", "mean_confidence"):
            assert isinstance(m[f], float) and math.isfinite(m[f])
        assert 0.1 <= m["mean_confidence"] <= 1.0 and m["mean_logit_gap"] >= 0
        s = report["summary"][m["name"]]
        assert s["n_seeds"] == 1 and s["clean_accuracy"]["estimate"] == m["clean_accuracy"]
        assert s["robust_accuracy"]["0.1"]["interval"] == m["robust_accuracy_interval"]["0.1"]
    for c in report["confidence_rank_correlation"]:
        assert set(c) == CORR_FIELDS | CORR_EXTRAS
        assert c["a"] in names and c["b"] in names
        assert -1 <= c["spearman"] <= 1 and -1 <= c["kendall"] <= 1


def test_report_roles_and_teachers(by_name):
    assert (by_name["standard"]["role"], by_name["standard"]["method"]) == ("standard", "standard")
    assert (by_name["pgd-at"]["role"], by_name["pgd-at"]["method"]) == ("adversarial", "pgd")
    assert (by_name["trades"]["role"], by_name["trades"]["method"]) == ("adversarial", "trades")
    for t in TEACHERS:
        assert by_name[t]["teacher"] is None and by_name[t]["manipulation"] is None
    for m in MANIPULATIONS:
        s = by_name[f"student:pgd-at:{m}"]
        assert (s["role"], s["method"], s["teacher"], s["manipulation"]) == ("student", "distill", "pgd-at", m)
    assert by_name["student:standard:none"]["teacher"] == "standard"


def test_correlation_pairs(report):
    pairs = [(c["a"], c["b"]) for c in report["confidence_rank_correlation"]]
    expected = [("standard", "pgd-at"), ("standard", "trades"), ("pgd-at", "trades")]
    expected += [("pgd-at", s) for s in STUDENTS[:-1]] + [("standard", "student:standard:none")]
    assert sorted(pairs) == sorted(expected)


def test_pgd_accuracy_falls_with_eps(by_name, report):
    for name in TEACHERS + ["student:pgd-at:none"]:
        accs = [by_name[name]["clean_accuracy"]] + [_pgd(by_name[name], e) for e in report["eps"][1:]]
        assert all(b <= a + 0.01 for a, b in zip(accs, accs[1:])), (name, accs)
        assert accs[-1] < accs[0]


def test_every_checkpoint_loads_and_reproduces_its_numbers(report, study_cache):
    ds = load_dataset("digits")
    x = ds.x_test
    for m in report["models"]:
        model = load_checkpoint(m["checkpoint"])
        assert not model.training
        with torch.no_grad():
            logits = model(x)
        assert logits.shape == (len(x), 10)
        assert model(torch.rand(5, 1, 8, 8)).shape == (5, 10)
        assert analysis.accuracy(logits, ds.y_test) == pytest.approx(m["clean_accuracy"], abs=1 / len(x))
        stats = analysis.per_sample(logits, ds.y_test)
        assert stats.max_logit.mean() == pytest.approx(m["mean_max_logit"], abs=1e-3)
        assert stats.logit_gap.mean() == pytest.approx(m["mean_logit_gap"], abs=1e-3)
        assert stats.confidence.mean() == pytest.approx(m["mean_confidence"], abs=1e-4)


@pytest.mark.parametrize("name", ["standard", "pgd-at", "student:pgd-at:none"])
def test_bfloat16_pgd_is_as_strong_as_float32(name, report, study_cache, monkeypatch):
    """Where the hardware computes bfloat16 natively, the attack's steps use it: it must not flatter robustness.

    Both attacks start from the same random points, so only the precision differs. Measured: bfloat16
    leaves -1 to +3 of 360 images more correct over six starts; float32 PGD alone moves by 3 to 8
    images from one random start to another on these models.
    """
    from core.engine import models

    m = next(r for r in report["models"] if r["name"] == name)
    model, ds = load_checkpoint(m["checkpoint"]), load_dataset("digits")
    spec = AttackSpec(eps=0.15, steps=20)
    acc = {}
    for precision, native in (("float32", False), ("auto", True)):
        monkeypatch.setenv(models.PRECISION_ENV, precision)
        monkeypatch.setattr(models, "cpu_has_native_bf16", lambda native=native: native)
        x_adv = pgd(model, ds.x_test, ds.y_test, spec, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            acc[precision] = analysis.accuracy(model(x_adv), ds.y_test)
    assert acc["auto"] == pytest.approx(acc["float32"], abs=4 / len(ds.y_test)), acc


def test_second_reproduce_is_a_cache_hit(report, study_cache):
    files = {p: p.stat().st_mtime_ns for p in study_cache.rglob("*") if p.is_file() and p.suffix != ".lock"}
    again = reproduce("digits", seeds=(0,))
    assert again["seconds"] < 10 and again["workers"] == 0  # nothing to compute: no worker started
    assert {p: p.stat().st_mtime_ns for p in files} == files
    for field in ("robust_accuracy", "robust_accuracy_interval", "pgd_accuracy", "masking"):
        assert [m[field] for m in again["models"]] == [m[field] for m in report["models"]], field
    assert json.loads(json.dumps(again["findings"])) == report["findings"]


def test_format_report_names_the_attack_of_every_column_and_the_verdicts(report):
    text = format_report(report)
    for name in TEACHERS + STUDENTS:
        assert name in text
    lines = text.splitlines()
    groups = next(line for line in lines if "AutoAttack" in line and "PGD-20 (upper bound)" in line)
    head = lines[lines.index(groups) + 1]
    assert head.split()[:3] == ["model", "clean", "@0.1"] and "@0.3" in head and head.rstrip().endswith("masking")
    assert groups.index("AutoAttack") < groups.index("PGD-20") < head.index("@0.3")
    assert report["reliable_attack_label"] in text and "an upper bound on robust accuracy" in text
    at = next(line for line in lines if line.startswith("pgd-at "))
    m = next(m for m in report["models"] if m["name"] == "pgd-at")
    lo, hi = m["robust_accuracy_interval"]["0.1"]
    assert f"{m['robust_accuracy']['0.1']:.3f} [{lo:.3f}, {hi:.3f}]" in at and at.rstrip().endswith("ok")
    assert f"{m['clean_accuracy']:.3f} [" in at
    assert "Findings at eps 0.1" in text and "FLAGGED" not in text
    for f in report["findings"]:
        line = next(line for line in lines if line.startswith(f"{f['id']:<14} "))
        assert f"{f['verdict']}: " in line and f"{f['effect']:+.3f} [{f['interval'][0]:+.3f}" in line
        assert f["attack"] in line


def test_format_report_shows_a_flagged_model_and_why(report):
    flagged = json.loads(json.dumps(report))
    reason = "At eps 0.1, PGD leaves far more correct than AutoAttack: 90.0% against 40.0%."
    flagged["models"][1]["masking"].update(flagged=True, reasons=[reason])
    flagged["summary"]["pgd-at"]["masking_flagged"] = 1
    text = format_report(flagged)
    assert next(line for line in text.splitlines() if line.startswith("pgd-at ")).rstrip().endswith("FLAGGED")
    assert f"pgd-at (seed 0): {reason}" in text and "Gradient masking flagged" in text


def test_several_seeds_give_intervals_over_seeds_and_paired_findings(study_cache):
    """Two "seeds" that hold the same cached models: the multi-seed path without training anything."""
    from core.study.recipes import default_recipes

    two = reproduce("digits", seeds=(0, 1), recipes=lambda dataset, seed: default_recipes(dataset, 0))
    assert [m["seed"] for m in two["models"]] == [0] * 10 + [1] * 10 and two["workers"] == 0
    s = two["summary"]["pgd-at"]
    one = next(m for m in two["models"] if m["name"] == "pgd-at")
    assert s["n_seeds"] == 2 and s["robust_accuracy"]["0.1"]["estimate"] == pytest.approx(one["robust_accuracy"]["0.1"])
    lo, hi = s["robust_accuracy"]["0.1"]["interval"]
    assert lo <= one["robust_accuracy"]["0.1"] <= hi and s["pgd_accuracy"]["0.1"]["std"] == 0
    found = {f["id"]: f for f in two["findings"]}
    assert found["1"]["n_seeds"] == 2 and found["3a"]["verdict"] == "holds"
    text = format_report(two)
    assert "2 seeds" in text and f"{s['pgd_accuracy']['0.1']['mean']:.3f}±0.000" in text
