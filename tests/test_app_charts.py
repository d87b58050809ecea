"""Chart builders, image helpers and selection handlers, tested as functions (AppTest cannot see charts)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from core.app import charts, palette, toy
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


def _walk(spec):
    """Every dict inside a spec (layers, facets, encodings), depth first."""
    if isinstance(spec, dict):
        yield spec
        for v in spec.values():
            yield from _walk(v)
    elif isinstance(spec, list):
        for v in spec:
            yield from _walk(v)


def _model_colours(spec: dict) -> dict[str, str]:
    """{display name: colour} of the chart's model colour scales (all of them must agree)."""
    out = {}
    for d in _walk(spec):
        enc = d.get("color") if isinstance(d.get("color"), dict) else None
        enc = enc.get("condition", enc) if enc else None
        if enc and enc.get("field") == "name" and "scale" in enc:
            pairs = dict(zip(enc["scale"]["domain"], enc["scale"]["range"]))
            assert all(out.get(k, v) == v for k, v in pairs.items()), (out, pairs)
            out.update(pairs)
    return out


def _tooltips(spec: dict) -> list[dict]:
    return [t for d in _walk(spec) if isinstance(d.get("tooltip"), list) for t in d["tooltip"]]


CATALOG = ["standard", "pgd-at", "trades", "student:pgd-at:none", "zoo:Carmon2019", "lab:pgd-at:none T=2"]
SESSION = palette.assign(CATALOG)


def _builders(models: list[str], colors) -> dict:
    """Every builder whose series are models, on small frames of `models`."""
    n = len(models)
    hist = pd.DataFrame({"model": np.repeat(models, 3), "group": "all", "start": np.tile([0.0, 1, 2], n),
                         "end": np.tile([1.0, 2, 3], n), "count": 1, "density": 1 / 3})
    curve = pd.DataFrame({"model": models, "eps": 0.0, "accuracy": 0.9})
    sample = pd.DataFrame({"model": models, "class": "0", "logit": 1.0, "role": "true class"})
    agreement = pd.DataFrame({"model": models, "tau": 0.5})
    frame = pd.DataFrame({"run": "r", "model": models, "estimate": 0.5, "lo": 0.4, "hi": 0.6})
    emb = pd.DataFrame({"model": models, "idx": 0, "x": 0.0, "y": 0.0, "label": "1", "pred": "1", "correct": True,
                        "confidence": 0.9})
    return {"distribution": charts.distribution_chart(hist, "max logit", models, colors=colors),
            "panels": charts.distribution_panels(hist, "max logit", models, colors=colors)[0][1],
            "legend": charts.model_legend(models, colors=colors),
            "accuracy": charts.accuracy_chart(curve, 0.0, models, colors=colors),
            "bars": charts.logit_bars(sample, models, colors=colors),
            "agreement": charts.agreement_chart(agreement, models, colors=colors),
            "interval": charts.interval_chart(frame, "robust accuracy", models, colors=colors),
            "embedding": charts.embedding_chart(emb, "model", models, colors=colors)}


@pytest.mark.parametrize("kind", ["distribution", "panels", "legend", "accuracy", "bars", "agreement", "interval",
                                  "embedding"])
def test_a_model_has_the_sessions_colour_on_every_chart_whatever_else_it_shows(kind):
    """The defect: colours followed the selection order, so PGD-AT was red beside Standard and blue alone."""
    seen = {}
    for models in (["standard", "pgd-at"], ["pgd-at", "trades"], ["lab:pgd-at:none T=2", "zoo:Carmon2019"],
                   ["zoo:Carmon2019"]):
        colours = _model_colours(_spec(_builders(models, SESSION)[kind]))
        assert set(colours) == {palette.display_name(m) for m in models}
        for m in models:
            assert colours[palette.display_name(m)] == SESSION[m]
            seen.setdefault(m, set()).add(colours[palette.display_name(m)])
    assert all(len(c) == 1 for c in seen.values())
    # without the session's colours (another page's default), the default study keeps its fixed colours
    alone = _model_colours(_spec(_builders(["pgd-at"], None)[kind]))
    assert alone == {"PGD-AT": SESSION["pgd-at"]}


@pytest.mark.parametrize("kind", ["distribution", "accuracy", "bars", "interval", "embedding"])
def test_legends_and_tooltips_show_display_names_and_titled_fields(kind):
    models = ["student:pgd-at:none", "standard"]
    spec = _spec(_builders(models, SESSION)[kind])
    shown = {"Student of PGD-AT (untouched)", "Standard"}
    colour = next(d["color"] for d in _walk(spec) if isinstance(d.get("color"), dict)
                  and d["color"].get("condition", d["color"]).get("field") == "name")
    colour = colour.get("condition", colour)
    assert set(colour["scale"]["domain"]) == shown and colour["title"] == "model"
    names = {r["name"] for rows in spec["datasets"].values() for r in rows if "name" in r}
    assert names == shown
    tips = _tooltips(spec)
    assert tips and all(t.get("title") for t in tips), tips
    assert {"field": "name", "title": "model", "type": "nominal"} in tips


def test_the_confidence_scatter_titles_every_tooltip_field():
    pairs = pd.DataFrame({"idx": [0], "label": [3], "pred_a": [3], "pred_b": [1], "conf_a": [0.9], "conf_b": [0.6],
                          "correct_a": [True], "correct_b": [False], "diff": [0.3], "outcome": ["only A correct"]})
    spec = _spec(charts.confidence_scatter(pairs, "student:pgd-at:none", "standard"))
    titles = {t["field"]: t.get("title") for t in _tooltips(spec)}
    assert titles["pred_a"] == "prediction of A" and titles["conf_a"] == "confidence of A"
    assert titles["pred_b"] == "prediction of B" and titles["conf_b"] == "confidence of B"
    assert titles["idx"] == "sample" and titles["diff"] == "confidence of A minus B"
    assert all(titles.values()) and not any("_" in t for t in titles.values())
    assert spec["layer"][1]["encoding"]["x"]["title"] == "confidence of Student of PGD-AT (untouched) (A)"


def test_distribution_chart_overlays_models_and_facets_groups():
    spec = _spec(charts.distribution_chart(_hist(), "max logit", MODELS))
    marks = [layer["mark"]["type"] for layer in _layers(spec)]
    assert marks == ["area", "line", "bar"]  # the bars are transparent: they carry each bin's tooltip
    assert spec["layer"][0]["encoding"]["color"]["scale"]["domain"] == ["Standard", "PGD-AT"]
    assert spec["layer"][0]["encoding"]["x"]["title"] == "max logit"
    faceted = _spec(charts.distribution_chart(_hist(("correct", "incorrect")), "margin", MODELS))
    assert faceted["facet"]["field"] == "group" and faceted["facet"]["sort"] == ["correct", "incorrect"]
    assert faceted["resolve"]["scale"] == {"x": "shared", "y": "shared"}


def test_the_histogram_axis_spans_every_bin_to_its_end():
    """The defect: the step line stopped at the last bin's start and the axis at a percentile of the values."""
    spec = _spec(charts.distribution_chart(_hist(), "max logit", MODELS))
    x = spec["layer"][0]["encoding"]["x"]
    assert x["scale"]["domain"] == [0, 5] and x["scale"]["nice"] is False
    rows = next(iter(spec["datasets"].values()))
    for m in ("Standard", "PGD-AT"):
        drawn = [r for r in rows if r["name"] == m]
        assert max(r["x"] for r in drawn) == 5  # the last bin is closed at its end...
        assert [r for r in drawn if r["closing"]][0]["density"] == 0.4  # ...at its own height


def test_distribution_panels_share_their_axes_in_group_order():
    """The defect: split facets came in order of appearance (7, 6, 3, ...) with their own x ranges."""
    hist = _hist(tuple(f"class {k}" for k in range(10)))
    hist.loc[hist["group"] == "class 3", "density"] *= 4  # the tallest panel sets every panel's y range
    hist.loc[hist["group"] == "class 9", "end"] += 2      # the widest sets every panel's x range
    panels = charts.distribution_panels(hist, "max logit", MODELS, colors=SESSION)
    assert [g for g, _ in panels] == [f"class {k}" for k in range(10)]
    specs = [_spec(c) for _, c in panels]
    assert [s["title"] for s in specs] == [f"class {k}" for k in range(10)]
    xs = {json.dumps(s["layer"][0]["encoding"]["x"]["scale"]) for s in specs}
    ys = {json.dumps(s["layer"][0]["encoding"]["y"]["scale"]) for s in specs}
    assert len(xs) == 1 and json.loads(xs.pop())["domain"] == [0, 7]
    assert len(ys) == 1 and json.loads(ys.pop())["domain"] == [0, pytest.approx(1.6 * 1.05)]
    assert all(s["layer"][0]["encoding"]["color"]["legend"] is None for s in specs)  # one legend: model_legend
    assert all("width" not in s for s in specs)  # drawn at their column's width (a phone stacks the columns)
    legend = _spec(charts.model_legend(MODELS, colors=SESSION))
    assert [r["name"] for r in next(iter(legend["datasets"].values()))] == ["Standard", "PGD-AT"]


def test_display_names_stay_unique():
    names = charts.display_names(["pgd-at", "PGD-AT", "standard"])
    assert names == {"pgd-at": "PGD-AT [pgd-at]", "PGD-AT": "PGD-AT [PGD-AT]", "standard": "Standard"}


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
    assert spec["encoding"]["xOffset"]["field"] == "name" and spec["encoding"]["xOffset"]["sort"] == ["Standard",
                                                                                                      "PGD-AT"]
    assert "true class" in json.dumps(spec["encoding"]["stroke"])


def test_embedding_chart_has_a_brush_and_colours_by_choice():
    emb = pd.DataFrame({"model": MODELS, "idx": [0, 0], "x": [0.0, 1.0], "y": [1.0, 0.0], "label": ["1", "1"],
                        "pred": ["1", "7"], "correct": [True, False], "confidence": [0.9, 0.4]})
    for color, field in (("label", "label"), ("correct", "correct"), ("confidence", "confidence"), ("model", "name")):
        spec = _spec(charts.embedding_chart(emb, color, MODELS))
        assert spec["params"][0]["name"] == "brush" and spec["params"][0]["select"]["type"] == "interval"
        assert spec["encoding"]["color"]["condition"]["field"] == field
        assert spec["encoding"]["shape"]["field"] == "name"


def test_agreement_and_toy_charts_build():
    agreement = pd.DataFrame({"model": ["s1", "s1", "s2"], "tau": [0.5, 1.0, -0.2]})
    spec = _spec(charts.agreement_chart(agreement, ["s1", "s2"]))
    assert [layer["mark"]["type"] for layer in spec["layer"]] == ["bar", "bar", "tick"]
    rows = next(iter(spec["datasets"].values()))
    assert rows[0]["model"] == "s1" and rows[0]["median"] == 0.75 and rows[1]["min"] == rows[1]["max"] == -0.2
    result = toy.demo(toy.ToySpec(n_per_class=10, steps=20), 0.3)
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


def test_selected_bounds_reads_a_rectangle_on_both_axes():
    assert charts.selected_bounds({"selection": {"brush": {"x": [2.5, 0.5], "y": [-1, 3]}}}) == (0.5, 2.5, -1, 3)
    assert charts.selected_bounds({"selection": {"brush": {"x": [0, 1]}}}) is None  # one axis: not a rectangle
    for bad in ({"selection": {"brush": {"x": ["a", 1], "y": [0, 1]}}}, {"selection": {"brush": {}}},
                {"selection": {"brush": {"x": [0, float("nan")], "y": [0, 1]}}}, {"selection": {}}, None):
        assert charts.selected_bounds(bad) is None


def test_selected_rows():
    assert charts.selected_rows({"selection": {"rows": [2, 0], "columns": []}}) == [2, 0]
    assert charts.selected_rows({"selection": {}}) == []
    assert charts.selected_rows(None) == []
