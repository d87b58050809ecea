"""Chart builders, image helpers and selection handlers, tested as functions (AppTest cannot see charts)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from core.app import charts, toy
from core.engine import analysis

MODELS = ["standard", "pgd-at"]


def _spec(chart) -> dict:
    return json.loads(chart.to_json())  # validates against the Vega-Lite schema


def _hist(groups=("all",)) -> pd.DataFrame:
    rows = []
    for m in MODELS:
        for g in groups:
            for k in range(5):
                rows.append({"model": m, "group": g, "start": k, "end": k + 1, "count": k, "density": k / 10})
    return pd.DataFrame(rows)


def _layers(spec: dict) -> list[dict]:
    return spec.get("layer") or spec.get("spec", {}).get("layer") or []


def test_model_colours_follow_the_selection_order():
    a = charts.model_scale(["standard", "pgd-at", "trades"]).to_dict()
    b = charts.model_scale(["standard", "pgd-at"]).to_dict()
    assert a["domain"][:2] == b["domain"] and a["range"][:2] == b["range"]
    assert len(set(a["range"])) == 3


def test_distribution_chart_overlays_models_and_facets_groups():
    spec = _spec(charts.distribution_chart(_hist(), "max logit", MODELS))
    marks = [layer["mark"]["type"] for layer in _layers(spec)]
    assert marks == ["area", "line"]
    assert spec["layer"][0]["encoding"]["color"]["scale"]["domain"] == MODELS
    assert spec["layer"][0]["encoding"]["x"]["title"] == "max logit"
    faceted = _spec(charts.distribution_chart(_hist(("correct", "incorrect")), "margin", MODELS))
    assert faceted["facet"]["field"] == "group" and faceted["facet"]["sort"] == ["correct", "incorrect"]


def test_accuracy_chart_marks_the_current_epsilon():
    curve = pd.DataFrame({"model": ["standard", "standard"], "eps": [0.0, 0.1], "accuracy": [0.99, 0.5]})
    spec = _spec(charts.accuracy_chart(curve, 0.1, MODELS))
    rule = [layer for layer in spec["layer"] if layer["mark"]["type"] == "rule"]
    assert len(rule) == 1
    datasets = spec["datasets"]
    assert any(rows == [{"eps": 0.1}] for rows in datasets.values())
    assert len(_spec(charts.accuracy_chart(curve, None, MODELS))["layer"]) == 2


def test_confidence_scatter_has_a_click_selection_on_the_sample_index():
    pairs = pd.DataFrame({"idx": [0, 1], "label": [3, 4], "pred_a": [3, 4], "pred_b": [3, 1], "conf_a": [0.9, 0.8],
                          "conf_b": [0.6, 0.3], "correct_a": [True, True], "correct_b": [True, False],
                          "diff": [0.3, 0.5], "outcome": ["both correct", "only A correct"]})
    for color in ("label", "outcome"):
        spec = _spec(charts.confidence_scatter(pairs, "standard", "pgd-at", color))
        points = spec["layer"][1]
        param = spec["params"][0]  # Altair lifts a layer's selection to the top, bound to that layer's view
        assert param["name"] == "pick" and param["select"]["fields"] == ["idx"]
        assert param["views"] == [points["name"]]
        assert points["encoding"]["color"]["field"] == color


def test_logit_bars_outline_the_true_class():
    sample = pd.DataFrame({"model": ["standard"] * 2 + ["pgd-at"] * 2, "class": ["0", "1"] * 2,
                           "logit": [3.0, -1.0, 1.0, 0.5], "role": ["true class", "other"] * 2})
    spec = _spec(charts.logit_bars(sample, MODELS))
    assert spec["encoding"]["xOffset"]["field"] == "model"
    assert "true class" in json.dumps(spec["encoding"]["stroke"])


def test_embedding_chart_has_a_brush_and_colours_by_choice():
    emb = pd.DataFrame({"model": MODELS, "idx": [0, 0], "x": [0.0, 1.0], "y": [1.0, 0.0], "label": ["1", "1"],
                        "pred": ["1", "7"], "correct": [True, False], "confidence": [0.9, 0.4]})
    for color, field in (("label", "label"), ("correct", "correct"), ("confidence", "confidence")):
        spec = _spec(charts.embedding_chart(emb, color, MODELS))
        assert spec["params"][0]["name"] == "brush" and spec["params"][0]["select"]["type"] == "interval"
        assert spec["encoding"]["color"]["condition"]["field"] == field


def test_agreement_and_toy_charts_build():
    agreement = pd.DataFrame({"model": ["s1", "s1", "s2"], "tau": [0.5, 1.0, -0.2]})
    spec = _spec(charts.agreement_chart(agreement, ["s1", "s2"]))
    assert [layer["mark"]["type"] for layer in spec["layer"]] == ["bar", "bar", "tick"]
    rows = next(iter(spec["datasets"].values()))
    assert rows[0]["model"] == "s1" and rows[0]["median"] == 0.75 and rows[1]["min"] == rows[1]["max"] == -0.2
    result = toy.demo(toy.ToySpec(n_per_class=10, steps=20), 0.3)
    sweep = toy.sweep(toy.ToySpec(n_per_class=10, steps=20), [0.0, 0.3])
    assert len(_spec(charts.toy_sweep_chart(sweep, 0.3))["layer"]) == 2
    assert len(_spec(charts.toy_regions_chart(result.regions(8), result.x, result.y))["hconcat"]) == 2


def test_a_real_histogram_from_analysis_renders():
    values = pd.DataFrame({"model": pd.Categorical(["a"] * 50 + ["b"] * 50, categories=["a", "b"]),
                           "group": "all", "value": np.linspace(0, 1, 100)})
    hist = analysis.histogram(values, 0.0, 1.0, bins=10)
    _spec(charts.distribution_chart(hist, "confidence", ["a", "b"]))


# --- images ----------------------------------------------------------------------------------------

def test_to_display_enlarges_with_square_pixels():
    img = np.zeros((1, 8, 8), dtype=np.float32)
    img[0, 0, 0] = 1.0
    out = charts.to_display(img, 96)
    assert out.shape == (96, 96) and out.dtype == np.uint8
    assert (out[:12, :12] == 255).all() and (out[12:, :] == 0).all()
    rgb = charts.to_display(np.full((3, 4, 4), 0.5, dtype=np.float32), 16)
    assert rgb.shape == (16, 16, 3) and (rgb == 128).all()


def test_perturbation_display_is_white_at_zero_red_up_blue_down():
    delta = np.zeros((1, 2, 2), dtype=np.float32)
    delta[0, 0, 0], delta[0, 1, 1] = 0.1, -0.1
    out = charts.perturbation_display(delta, 0.1, size=2)
    assert out.shape == (2, 2, 3)
    assert tuple(out[0, 1]) == (255, 255, 255)
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[1, 1]) == (0, 0, 255)
    half = charts.perturbation_display(delta / 2, 0.1, size=2)
    assert tuple(half[0, 0]) == (255, 128, 128)  # amplified relative to eps, not to the largest change


def test_thumbnails():
    assert [t.shape for t in charts.thumbnails(np.zeros((3, 1, 8, 8)), 16)] == [(16, 16)] * 3


# --- selection handlers ---------------------------------------------------------------------------

@pytest.mark.parametrize("event, expected", [
    ({"selection": {"pick": [{"idx": 17, "conf_a": 0.4}]}}, 17),
    ({"selection": {"pick": [{"idx": 3.0}, {"idx": 9}]}}, 3),
    ({"selection": {"pick": {"idx": [5]}}}, 5),
    (SimpleNamespace(selection=SimpleNamespace(pick=[{"idx": 8}])), 8),
    ({"selection": {"pick": []}}, None),
    ({"selection": {}}, None),
    ({"selection": {"pick": [{"idx": "not a number"}]}}, None),
    ({"selection": {"pick": [{"other": 1}]}}, None),
    (None, None),
])
def test_selected_index(event, expected):
    assert charts.selected_index(event) == expected


def test_selected_points_filters_by_the_brush():
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "y": [0.0, 1.0, 2.0, 3.0], "idx": [0, 1, 2, 3]})
    inside = charts.selected_points({"selection": {"brush": {"x": [2.5, 0.5], "y": [0.5, 2.5]}}}, frame)
    assert list(inside["idx"]) == [1, 2]
    only_x = charts.selected_points({"selection": {"brush": {"x": [2.5, 3.5]}}}, frame)
    assert list(only_x["idx"]) == [3]
    assert charts.selected_points({"selection": {"brush": {}}}, frame).empty
    assert charts.selected_points({"selection": {"brush": {"x": ["a", "b"]}}}, frame).empty
    assert charts.selected_points(None, frame).empty


def test_selected_rows():
    assert charts.selected_rows({"selection": {"rows": [2, 0], "columns": []}}) == [2, 0]
    assert charts.selected_rows({"selection": {}}) == []
    assert charts.selected_rows(None) == []
