"""The "Across models" page's logic (core.app.across) and chart (core.app.charts_across), on hand-made census frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.app import across, charts_across
from core.study import census as C
from core.study import sweep
from core.study.recipes import default_recipes, zoo_recipe

AA = "Linf AutoAttack (APGD-CE + APGD-T, 100 iterations), eps 0.1"
PGD = "Linf PGD-20 (CE loss, 1 start), eps 0.1: an upper bound"


def census_frame() -> pd.DataFrame:
    """Four models as census rows: two plotted by AutoAttack, one by PGD, one without clean logits."""
    rows = []
    for i, (name, method, source, attack, cached) in enumerate([
            ("standard", "standard", "default study", AA, True), ("pgd-at", "pgd-at", "default study", AA, True),
            ("pgd-at-eps0.1-s1", "pgd-at", "sweep", PGD, True),
            ("rb:Wong2020Fast", "zoo", "RobustBench", None, False)]):
        row = {c: np.nan for c in C.COLUMNS}
        row.update(name=name, key=f"k{i}", method=method, source=source, train_eps=[0.0, 0.2, 0.1, np.nan][i],
                   seed=[0, 0, 1, None][i], arch="digits_cnn" if i < 3 else None, clean_cached=cached, eps=0.1,
                   robust_attack=attack, plotted=cached, threat="Linf" if i == 3 else None)
        if cached:
            row.update(mean_max_logit=10.0 - 3 * i, mean_max_logit_lo=9.5 - 3 * i, mean_max_logit_hi=10.5 - 3 * i,
                       robust_accuracy=0.5 + 0.2 * i, robust_accuracy_lo=0.45 + 0.2 * i,
                       robust_accuracy_hi=0.55 + 0.2 * i, clean_accuracy=0.98, clean_accuracy_lo=0.97,
                       clean_accuracy_hi=0.99)
        if i == 3:
            row.update(published_clean=0.8334, published_autoattack=0.4320, published_eps=8 / 255)
        rows.append(row)
    out = pd.DataFrame(rows, columns=C.COLUMNS)
    out["seed"] = out["seed"].astype("Int64")
    return out


def test_points_are_the_plotted_models_with_their_intervals_and_attack_in_words():
    pts = across.points(census_frame(), "mean_max_logit")
    assert list(pts["name"]) == ["standard", "pgd-at", "pgd-at-eps0.1-s1"]
    assert list(pts["model"]) == ["Standard", "PGD-AT", "PGD-AT (eps 0.1, seed 1)"]
    assert list(pts["attack"]) == ["AutoAttack (fast)", "AutoAttack (fast)", "PGD-20: an upper bound"]
    assert pts.loc[1, "x_text"] == "7.000 [6.500, 7.500]" and pts.loc[0, "y_text"] == "0.500 [0.450, 0.550]"
    assert list(pts["seed_text"]) == ["0", "0", "1"] and list(pts["train_eps_text"]) == ["0", "0.2", "0.1"]
    assert across.points(census_frame(), C.RANK_CORR).empty  # no rank correlation computed: nothing to plot
    with pytest.raises(ValueError):
        across.points(census_frame(), "entropy")


def test_the_y_axis_says_which_attack_made_how_many_points():
    pts = across.points(census_frame(), "mean_max_logit")
    assert across.y_label(pts, 0.1) == ["robust accuracy at eps 0.1", "AutoAttack (fast): 2 models",
                                        "PGD-20, an upper bound: 1 model"]
    assert across.short_attack(AA.replace("AutoAttack (", "AutoAttack standard (")) == "AutoAttack (standard)"
    assert across.short_attack(None) == ""
    assert "Standard" in across.x_label(C.RANK_CORR, "standard")[1]
    assert across.x_label("mean_logit_gap") == ["mean logit gap (max minus second-largest)", "clean test images"]


def test_the_trend_sentence_says_resolved_or_plainly_not():
    up = C.Trend(8, 0.1, 0.0, 0.9, 0.6, 1.0)
    assert across.trend_sentence(up, "mean_max_logit").startswith("Resolved across 8 models: a higher mean max logit "
                                                                  "goes with higher robust accuracy")
    flat = C.Trend(5, 0.0, 0.5, 0.1, -0.6, 0.8)
    assert across.trend_sentence(flat, "mean_confidence").startswith("Not resolved with 5 models")
    assert "at least three" in across.trend_sentence(C.Trend(2, 1.0, 0.0, 1.0, np.nan, np.nan), "mean_max_logit")
    line = across.trend_line(C.Trend(3, 2.0, 1.0, 1.0, 0.5, 1.0), pd.DataFrame({"x": [1.0, 3.0, 2.0]}))
    assert list(line["x"]) == [1.0, 3.0] and list(line["y"]) == [3.0, 7.0]
    assert across.trend_line(C.Trend(1, np.nan, np.nan, np.nan, np.nan, np.nan), line).empty


def test_what_to_run_for_a_model_that_is_not_plotted():
    grid = sweep.SweepGrid("digits", methods=("pgd-at",), train_eps=(0.1,), seeds=(2,), archs=("small_cnn",),
                           students=("flatten_nonmax",))
    teacher, student = sweep.sweep_recipes(grid)
    assert across.command(teacher, "digits", "sweep") == ("python -m core sweep --dataset digits --methods pgd-at "
                                                          "--train-eps 0.1 --seeds 2 --archs small_cnn")
    assert across.command(student, "digits", "sweep").endswith("--seeds 2 --archs small_cnn --students flatten_nonmax")
    std = sweep.sweep_recipes(sweep.SweepGrid("digits", methods=("standard",), seeds=(0,)))[0]
    assert across.command(std, "digits", "sweep") == \
        "python -m core sweep --dataset digits --methods standard --seeds 0"
    assert across.command(default_recipes("digits")[2], "digits", "default study") == \
        "python -m core precompute --dataset digits --models trades"
    assert across.command(zoo_recipe("Wong2020Fast"), "cifar10", "RobustBench") == \
        "python -m core precompute --dataset cifar10 --models none --zoo Wong2020Fast --threat Linf"
    assert "--evidence --reliable-eps 0.2" in across.autoattack_hint("digits", 0.2)
    frame = census_frame()
    missing = across.not_plotted(frame, {"rb:Wong2020Fast": zoo_recipe("Wong2020Fast")}, "cifar10")
    assert list(missing["name"]) == ["rb:Wong2020Fast"] and missing.loc[0, "why"] == "no clean logits in the cache"
    assert "--zoo Wong2020Fast" in missing.loc[0, "run"]


def test_the_robustbench_table_sets_published_numbers_beside_measured_ones():
    table = across.zoo_table(census_frame())
    assert list(table["model"]) == ["rb:Wong2020Fast"] and table.loc[0, "published clean"] == 0.8334
    assert table.loc[0, "published AutoAttack"] == 0.4320 and table.loc[0, "measured robust"] == "not computed"
    assert table.loc[0, "attack"] == "not computed"
    assert "10,000" in across.PUBLISHED_NOTE and "standard" in across.PUBLISHED_NOTE


def test_the_csv_holds_every_census_column_and_a_display_name():
    out = across.export(census_frame())
    assert list(out.columns) == ["name", "display_name", *C.COLUMNS[1:]] and len(out) == 4
    assert "robust_attack" in out.columns and out.loc[2, "display_name"] == "PGD-AT (eps 0.1, seed 1)"


def test_a_selection_event_gives_the_models_name():
    assert across.selected_model({"selection": {"pick": [{"name": "pgd-at"}]}}) == "pgd-at"
    assert across.selected_model({"selection": {"pick": {"name": ["trades"]}}}) == "trades"
    assert across.selected_model({"selection": {"pick": []}}) is None and across.selected_model(None) is None


def test_link_settings_open_the_picked_model_beside_a_partner():
    links = across.link_settings("pgd-at", "standard", ["standard", "pgd-at"], "digits", "linf", 20, 0.1)
    assert links["distributions"] == {"ds": "digits", "m": ["pgd-at", "standard"], "norm": "linf", "steps": 20,
                                      "eps": 0.1}
    assert links["differences"]["a"] == "pgd-at" and links["differences"]["b"] == "standard"
    self_ref = across.link_settings("standard", "standard", ["standard", "trades"], "digits", "linf", 20, 0.1)
    assert self_ref["differences"]["b"] == "trades"
    alone = across.link_settings("standard", None, ["standard"], "digits", "linf", 20, 0.1)
    assert set(alone) == {"distributions"} and alone["distributions"]["m"] == ["standard"]


def test_the_chart_has_error_bars_a_trend_a_click_selection_and_titled_tooltips():
    pts = across.points(census_frame(), "mean_max_logit")
    line = across.trend_line(C.trend(pts, "x", "y"), pts)
    spec = charts_across.across_chart(pts, line, "mean max logit", across.y_label(pts, 0.1), "source",
                                      picked="pgd-at").to_dict()
    layers = spec["layer"]
    marks = [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in layers]
    assert marks == ["line", "rule", "rule", "point", "point"]  # trend, y and x error bars, models, the picked ring
    params = spec.get("params", []) + [p for layer in layers for p in layer.get("params", [])]
    assert [p["name"] for p in params] == ["pick"] and params[0]["select"]["fields"] == ["name"]
    tips = layers[3]["encoding"]["tooltip"]
    assert all(t.get("title") for t in tips) and {t["title"] for t in tips} >= {"model", "method", "training eps",
                                                                                "seed", "architecture", "attack of y"}
    color = layers[3]["encoding"]["color"]
    assert color["field"] == "source" and color["scale"]["domain"] == ["default study", "sweep"]
    assert layers[3]["encoding"]["shape"]["scale"]["range"] == ["circle", "diamond"]
    by_method = charts_across.across_chart(pts, line.iloc[:0], "x", "y", "method").to_dict()
    assert [layer["mark"]["type"] for layer in by_method["layer"]] == ["rule", "rule", "point"]
    colors = by_method["layer"][2]["encoding"]["color"]["scale"]["range"]
    assert colors[:2] == list(charts_across.METHOD_COLORS.values())[:2]


@pytest.mark.parametrize("keep", [1, 2])
def test_the_chart_draws_one_or_two_models_with_a_single_training_eps(keep):
    """The first minutes of a fresh cache: only the standard model (one size) has both numbers."""
    frame = census_frame()
    frame["train_eps"] = 0.0
    pts = across.points(frame, "mean_max_logit").iloc[:keep]
    line = across.trend_line(C.trend(pts, "x", "y"), pts)
    spec = charts_across.across_chart(pts, line, "mean max logit", across.y_label(pts, 0.1), "method").to_dict()
    assert any(layer["mark"]["type"] == "point" for layer in spec["layer"] if isinstance(layer["mark"], dict))
