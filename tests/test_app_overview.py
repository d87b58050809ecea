"""The overview's findings box on a cache filled entry by entry, as the first-run job fills it: findings 1 and 2
from clean logits alone, the 3s provisionally from PGD (labelled so) until AutoAttack's entries replace them.

The logits are synthetic (written with `core.engine.logits.put`), so every number is known in advance: the
students' accuracy under PGD at the findings' eps differs from their accuracy under AutoAttack there, and a
line must carry the number of the attack it names.
"""

from __future__ import annotations

import pytest
import torch
from apptest import no_exception, open_page, texts

from core.app import jobs, overview, prepare, views
from core.engine.logits import put
from core.study import evidence
from core.study.findings import FINDING_MODELS, ROBUST_IDS, ROBUST_MODELS, Finding, format_findings
from core.study.recipes import default_recipes

N, K = 200, 10
LABELS = torch.arange(N) % K
# fraction of images each student keeps correct: (under PGD-20 at eps 0.1, under AutoAttack there). Students of
# the PGD-AT teacher without manipulation: 0.8 under PGD, 0.5 under AutoAttack; the others 0.2 and 0.1.
ROBUST = {"student:pgd-at:none": (0.8, 0.5), "student:standard:none": (0.2, 0.1),
          "student:pgd-at:global_confidence": (0.2, 0.1), "student:pgd-at:shuffle_nonmax": (0.2, 0.1)}


def _logits(scale: float, correct: float, seed: int) -> torch.Tensor:
    """(N, K) logits of `scale`, whose argmax is the label on the first `correct` fraction of images."""
    g = torch.Generator().manual_seed(seed)
    z = torch.rand(N, K, generator=g) * scale
    right = torch.arange(N) < round(correct * N)
    wrong = (LABELS + 1) % K
    z[torch.arange(N), torch.where(right, LABELS, wrong)] = 2.0 * scale
    return z


class Study:
    """The findings' models of seed 0 and the entries to write for them."""

    def __init__(self, seeds: int = 1):
        self.sel = views.Selection()
        self.data, self.ev = self.sel.data(), self.sel.evidence()
        self.per_seed = overview.seed_recipes("digits", seeds)
        self.models = {r.name: r for r in self.per_seed[0]}

    def clean(self, *names: str) -> None:
        for n in names or FINDING_MODELS:  # the PGD-AT teacher's logits are smaller than the standard one's
            put(self.models[n].key, self.data, None, _logits(2.0 if n == "pgd-at" else 8.0, 1.0, hash(n) % 97), LABELS)

    def attacked(self, reliable: bool, *names: str) -> None:
        attack = (self.ev.reliable if reliable else self.ev.pgd).at(self.ev.eps)
        for n in names or ROBUST_MODELS:
            put(self.models[n].key, self.data, attack, _logits(4.0, ROBUST[n][reliable], 1), LABELS)

    def view(self) -> overview.FindingsView:
        return overview.findings_view(self.per_seed, self.data, self.ev)


def _line(view: overview.FindingsView, fid: str) -> str:
    found = [line for line in view.lines if line.startswith(f"**{fid} \u2014")]
    assert len(found) == 1, view.lines
    return found[0]


def test_nothing_is_stated_without_clean_logits():
    study = Study()
    study.attacked(False)  # PGD entries of the students, but no clean logits of any model
    view = study.view()
    assert view.lines == () and view.provisional == ()
    text = "\n".join(view.waiting)
    assert "**1 and 2** are not stated yet: they wait for the clean logits of PGD-AT, Standard" in text
    assert "provisional" not in text
    study.clean("pgd-at")  # one of the two models of 1 and 2: still nothing
    view = study.view()
    assert view.lines == () and "they wait for the clean logits of Standard" in "\n".join(view.waiting)


def test_clean_findings_are_stated_without_any_attack():
    study = Study()
    study.clean("pgd-at", "standard")
    view = study.view()
    assert [line.split(" \u2014")[0] for line in view.lines] == ["**1", "**2"] and view.provisional == ()
    assert _line(view, "1").startswith("**1 \u2014 holds:** PGD-AT minus standard on clean test images")
    assert "on clean test images" in _line(view, "2")
    assert not any("AutoAttack" in line or "PGD-20" in line for line in view.lines)
    text = "\n".join(view.waiting)
    assert ("**3a** is not stated yet: it waits for AutoAttack at eps 0.1 on Student of PGD-AT (untouched), "
            "Student of Standard (untouched) (Student of PGD-AT (untouched), Student of Standard (untouched) not trained yet)") in text
    assert "1 and 2" not in text and "provisional" not in text


def test_robust_findings_are_stated_provisionally_under_pgd_and_say_so():
    study = Study()
    study.clean()
    study.attacked(False)
    view = study.view()
    assert view.provisional == ROBUST_IDS and len(view.lines) == 5
    line = _line(view, "3a")
    assert line.startswith("**3a \u2014 holds under PGD-20, provisionally:** student of PGD-AT minus the student of "
                           "the standard model, accuracy under Linf PGD-20 (CE loss, 1 start) at eps 0.1, each an "
                           "upper bound on robust accuracy (provisional: Linf AutoAttack"), line
    assert "**+0.600**" in line  # PGD's numbers: 0.8 - 0.2
    assert "robust accuracy under Linf AutoAttack" not in line
    text = "\n".join(view.waiting)
    assert "**3a** is provisional: it waits for AutoAttack at eps 0.1 on Student of PGD-AT (untouched), " \
           "Student of Standard (untouched) (stated under PGD-20 for now)" in text
    assert "not stated yet" not in text
    assert all("provisional" not in _line(view, fid) for fid in ("1", "2"))


def test_autoattack_entries_replace_the_provisional_statement():
    study = Study()
    study.clean()
    study.attacked(False)
    study.attacked(True, "student:pgd-at:none", "student:standard:none")  # 3a's models only
    view = study.view()
    assert view.provisional == ("3b-confidence", "3b-order")
    line = _line(view, "3a")
    assert line.startswith("**3a \u2014 holds:** student of PGD-AT minus the student of the standard model, robust "
                           "accuracy under Linf AutoAttack (APGD-CE + APGD-T, 100 iterations) at eps 0.1: **+0.400**")
    assert "provisional" not in line and "PGD-20" not in line
    assert "provisionally" in _line(view, "3b-order") and "**+0.600**" in _line(view, "3b-order")
    study.attacked(True)
    view = study.view()
    assert view.provisional == () and view.waiting == () and len(view.lines) == 5
    assert not any("provisional" in line or "PGD-20" in line for line in view.lines)


def test_the_report_path_never_states_a_provisional_finding():
    study = Study()
    study.clean()
    study.attacked(False)
    found = evidence.findings(study.per_seed, study.data, study.ev)
    assert [f.id for f in found] == ["1", "2"]
    pgd = evidence.findings(study.per_seed, study.data, study.ev, provisional=True)
    assert [f.id for f in pgd] == ["1", "2", *ROBUST_IDS] and all(f.provisional for f in pgd[2:])
    assert pgd[2].attack == evidence.provisional_label(study.ev) and "upper bound" in pgd[2].attack
    assert "provisional" not in found[0].to_dict() and pgd[2].to_dict()["provisional"] is True
    assert "(provisional)" in format_findings(pgd[2:3])[0] and "(provisional)" not in format_findings(found)[0]


def test_a_later_seed_counts_only_once_it_is_evaluated():
    study = Study(seeds=2)
    study.clean()
    study.attacked(True)
    view = study.view()
    assert view.missing_seeds == (1,) and view.provisional == ()
    assert "Seed 1 of the 2 asked is not trained and evaluated yet: each finding above says how many seeds" \
           in "\n".join(view.waiting)


def test_the_findings_state_changes_with_each_entry_they_read():
    study = Study()
    before = overview.findings_state(study.per_seed, study.data, study.ev)
    assert before == ((False, False, False),) * len(FINDING_MODELS)
    study.clean("standard")
    after = overview.findings_state(study.per_seed, study.data, study.ev)
    assert after != before and after[FINDING_MODELS.index("standard")] == (True, False, False)


def test_the_evidence_order_puts_autoattack_on_the_findings_students_first():
    ev = views.Selection().evidence()
    recipes = default_recipes("digits")
    steps = prepare.evidence_order(recipes, ev)
    reliable = (ev.reliable, ev.reliable_eps)
    assert [(r.name, e) for r, e in steps[:len(ROBUST_MODELS)]] == [(n, [reliable]) for n in ROBUST_MODELS]
    assert ROBUST_MODELS[:2] == ("student:pgd-at:none", "student:standard:none")  # 3a's two first
    # then every model's remaining entries, the findings' models before the others: nothing more, nothing less
    later = [r.name for r, _ in steps[len(ROBUST_MODELS):]]
    assert set(later[:len(FINDING_MODELS)]) == set(FINDING_MODELS) and len(later) == len(recipes)
    done = sorted((r.key, e[0].key()) for r, entries in steps for e in entries)
    assert done == sorted((r.key, a.key()) for r in recipes for a, _ in ev.entries())
    for r, entries in steps:  # the progress shares of each model's steps add up to its whole evidence
        assert pytest.approx(1.0) == sum(share for rr, es in steps if rr.key == r.key
                                         for _, _, share in prepare._stages(rr, ev, es).values())


def test_the_overview_page_states_what_the_cache_allows(monkeypatch):
    """The page on the synthetic cache: no first-run training (AUTO_TRAIN off), the provisional lines shown."""
    monkeypatch.setattr("pages._waiting.AUTO_TRAIN", ())
    study = Study()
    study.clean()
    study.attacked(False)
    jobs.clear()
    at = open_page("overview")
    no_exception(at)
    said = texts(at)
    assert "holds under PGD-20, provisionally" in said and "(stated under PGD-20 for now)" in said
    assert "or provisionally under PGD at that epsilon, where it is not computed yet" in said
    assert jobs.active() == []  # nothing started: the page only read the cache
    jobs.clear()


def test_a_finding_marked_provisional_keeps_its_mark_in_every_rendering():
    ev = views.Selection().evidence()
    f = Finding("3b-order", "claim", "not resolved with 1 seed", 0.01, (-0.02, 0.04), 1, "x", provisional=True)
    line = overview.finding_line(f, ev)
    assert line.startswith("**3b-order \u2014 not resolved with 1 seed under PGD-20, provisionally:**")
    assert "each an upper bound on robust accuracy" in line


def test_prepare_runs_the_evidence_in_that_order_and_its_progress_only_rises(monkeypatch):
    """The job's evidence phase with the work faked: AutoAttack on the findings' students first, each entry once,
    the bar rising to the end."""
    ev = views.Selection().evidence()
    recipes = default_recipes("digits")
    calls, bar = [], []

    def ensure(source, recipe, data, ev_, device="cpu", progress=None, cancel=None, data_dir=None, entries=None):
        for attack, _ in entries:
            label = f"{recipe.name}: {attack.describe()}"
            progress(label, 0.0)
            progress(label, 1.0)
            calls.append((recipe.name, attack.key()))

    class Ctx:
        cancelled = False

        def report(self, stage=None, fraction=None, eta=None):
            bar.append(fraction)

    monkeypatch.setattr(prepare, "is_trained", lambda r: True)
    monkeypatch.setattr(prepare, "logits_cached", lambda *a: True)
    monkeypatch.setattr(prepare, "model_source", lambda *a, **k: lambda: None)
    monkeypatch.setattr(evidence, "is_complete", lambda *a: False)
    monkeypatch.setattr(evidence, "ensure", ensure)
    sel = views.Selection()
    prepare.prepare(Ctx(), recipes, sel.data(), sel.attack(), sel.grid(), ev=ev, checked=recipes)
    assert calls[:len(ROBUST_MODELS)] == [(n, ev.reliable.key()) for n in ROBUST_MODELS]
    assert len(calls) == len(set(calls)) == len(recipes) * len(ev.entries())
    assert bar == sorted(bar) and bar[-1] == pytest.approx(1.0)
