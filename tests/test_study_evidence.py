"""The evidence plan: AutoAttack, margin-loss and unbounded PGD entries beside the PGD grid, the masking
check and the findings read from them."""

from __future__ import annotations

import pytest

from core.engine.logits import entry_path
from core.study import evidence
from core.study.hyper import eval_data
from core.study.recipes import default_recipes, load_model


def test_the_plan_of_digits_states_its_findings_at_0_1_with_autoattack():
    ev = evidence.evidence("digits")
    assert ev.eps == 0.1 and ev.reliable_eps == (0.0, 0.1) and ev.grid == (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
    assert ev.reliable.method == "autoattack-fast" and ev.margin.loss == "margin" and ev.unbounded.eps == 1.0
    assert "AutoAttack" in ev.describe() and "0.1" in ev.describe()
    assert evidence.evidence("digits", norm="l2").eps == 0.4  # the same place in the L2 grid
    assert evidence.evidence("digits", reliable_eps=[0.2]).reliable_eps == (0.0, 0.1, 0.2)


def test_evidence_is_computed_once_and_the_checks_read_it(app_cache):
    recipes = {r.name: r for r in default_recipes("digits")}
    data, ev = eval_data("digits"), evidence.evidence("digits")
    for name in ("standard", "pgd-at"):
        r = recipes[name]
        for attack, points in ev.entries()[1:]:  # the study's reproduce computed them: start without
            for e in points:
                if e > 0:
                    entry_path(r.key, data, attack.at(e)).unlink(missing_ok=True)
        assert not evidence.is_complete(r, data, ev) and evidence.masking(r, data, ev, 10) is None
        evidence.ensure(lambda r=r: load_model(r), r, data, ev)
        assert evidence.is_complete(r, data, ev)
        report = evidence.masking(r, data, ev, 10)
        assert report is not None and not report.flagged, report.reasons
        assert report.reliable_acc[0.1] <= report.pgd_acc[0.1] + 2 / 360
        assert report.unbounded_acc is not None and report.unbounded_acc < 0.05
    before = entry_path(recipes["pgd-at"].key, data, ev.reliable.at(0.1)).stat().st_mtime_ns
    evidence.ensure(lambda: pytest.fail("a cached model was loaded again"), recipes["pgd-at"], data, ev)
    assert entry_path(recipes["pgd-at"].key, data, ev.reliable.at(0.1)).stat().st_mtime_ns == before
    found = {f.id: f for f in evidence.findings([list(recipes.values())], data, ev)}
    assert found["1"].verdict == "holds" and found["3a"].verdict == "holds"
    assert "AutoAttack" in found["3a"].attack and "0.1" in found["3a"].attack
