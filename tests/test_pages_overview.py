"""The overview page through AppTest: its table as people read it, and what it says when the sidebar asks for
an attack that was not computed."""

from __future__ import annotations

import pytest
from apptest import no_exception, open_page, texts

from core.app import jobs


@pytest.fixture(autouse=True)
def no_jobs_left():
    jobs.clear()
    yield
    jobs.clear()


def test_the_table_leads_with_the_accuracies_under_readable_names(app_cache):
    at = open_page("overview")
    no_exception(at)
    table = at.dataframe[0].value
    order = list(at.dataframe[0].proto.column_order)
    assert order[:4] == ["model", "clean accuracy", "robust accuracy (AutoAttack @ eps 0.1)",
                         "PGD-20 @ eps 0.1 (upper bound)"]  # what a phone shows without scrolling
    names = dict(zip(table["key"], table["model"]))
    assert names["pgd-at"] == "PGD-AT" and names["student:pgd-at:none"] == "Student of PGD-AT (untouched)"
    assert "Identical models: **Standard** and **Student on hard labels**" in texts(at)
    assert "Findings 1 and 2 are measured on **clean** test images" in texts(at)


def test_an_attack_not_computed_says_what_is_missing_and_keeps_clean_accuracy(app_cache):
    at = open_page("overview", {"steps": "100"})
    no_exception(at)
    jobs.cancel_all(30)  # the first-run job starts on the new attack; what the page says is the point here
    said = texts(at)
    assert "**PGD logits missing** for 10 models" in said and "Linf PGD-100 over" in said
    table = at.dataframe[0].value
    assert table["clean accuracy"].notna().all()  # clean logits do not depend on the attack
    assert table["PGD-100 @ eps 0.1 (upper bound)"].isna().all()
    assert set(table["status"]) == {"trained; linf PGD-100 logits not computed"}
    assert "the gradient-masking check is not computed" in said  # AutoAttack itself is there
    assert "AutoAttack at eps 0.1 is not computed" not in said


def test_identical_models_are_named_where_both_appear(app_cache):
    dist = open_page("distributions", {"m": "standard,student:pgd-at:hard_labels"})
    no_exception(dist)
    assert "Identical models: **Standard** and **Student on hard labels**" in texts(dist)
    diff = open_page("differences", {"m": "standard,student:pgd-at:hard_labels,pgd-at"})
    no_exception(diff)
    assert "Identical models" in texts(diff)
    diff.selectbox(key="w.b").set_value("pgd-at").run()
    assert "Identical models" not in texts(diff)  # A and B differ now
    assert "Identical models" not in texts(open_page("distributions"))
