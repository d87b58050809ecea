"""Display names and the session's colours (core.app.palette)."""

from __future__ import annotations

from core.app import palette
from core.app.views import catalog


def test_every_default_model_has_a_readable_name_and_unknown_names_stay():
    names = {n: palette.display_name(n) for n in catalog("digits")}
    assert names["pgd-at"] == "PGD-AT" and names["trades"] == "TRADES" and names["standard"] == "Standard"
    assert names["student:pgd-at:shuffle_nonmax"] == "Student of PGD-AT (non-max shuffled)"
    assert names["student:pgd-at:hard_labels"] == "Student on hard labels"
    assert len(set(names.values())) == len(names) and not any(":" in v for v in names.values())
    assert palette.display_name("zoo:Carmon2019Unlabeled") == "zoo:Carmon2019Unlabeled"
    assert palette.display_name("lab:trades:none T=2 epochs=5 (mean of 3 seeds)") == \
        "Lab: student of TRADES (untouched), T=2, epochs=5 (mean of 3 seeds)"


def test_a_model_keeps_its_colour_whatever_else_the_catalog_or_a_chart_holds():
    full = palette.assign(list(catalog("digits")) + ["lab:pgd-at:none T=2", "lab:pgd-at:none T=3"])
    assert len(set(full.values())) == len(full)  # twelve models, twelve colours
    some = palette.assign(["pgd-at", "lab:pgd-at:none T=2"])
    assert some["pgd-at"] == full["pgd-at"] and palette.assign(["student:pgd-at:none"])["student:pgd-at:none"] == \
        full["student:pgd-at:none"]  # the default study's colours are fixed
    assert palette.colors_for(["trades", "pgd-at"], full) == [full["trades"], full["pgd-at"]]
    assert palette.colors_for(["unknown"], full) == [palette.assign(["unknown"])["unknown"]]


def test_swept_models_and_their_students_have_readable_names():
    d = palette.display_name
    assert d("pgd-at-eps0.1-s1") == "PGD-AT (eps 0.1, seed 1)" and d("standard-s0") == "Standard (seed 0)"
    assert d("fast-at-eps0.2-s2") == "Fast-AT (eps 0.2, seed 2)"
    assert d("trades-eps0.2-s0-small_cnn") == "TRADES (eps 0.2, seed 0, small_cnn)"
    assert d("student:pgd-at-eps0.1-s1:none") == "Student of PGD-AT (eps 0.1, seed 1; untouched)"
    assert d("student:pgd-at-eps0.1-s1:hard_labels") == "Student on hard labels (teacher PGD-AT, eps 0.1, seed 1)"
    assert d("lab:trades-eps0.3-s0:shuffle_nonmax T=2") == \
        "Lab: student of TRADES (eps 0.3, seed 0; non-max shuffled), T=2"
    for other in ("standard-eps0.1-s0", "pgd-at-s0", "fast-at", "pgd-at-eps0.1", "rb:Wong2020Fast"):
        assert d(other) == other  # not a sweep's name: shown as it is
