"""The charts the distributions and embedding pages draw, read from the page as AppTest sees it (the
Vega-Lite specs Streamlit sends), against the trained study cache: colours, names, ranges, facets, links."""

from __future__ import annotations

import json
import time

import numpy as np
import pyarrow as pa
import pytest
from apptest import no_exception, open_page, texts
from streamlit.testing.v1 import AppTest
from test_app_charts import _model_colours, _walk

from core.app import jobs, palette, views
from core.study.recipes import default_recipes


@pytest.fixture(autouse=True)
def no_jobs_left():
    jobs.clear()
    yield
    jobs.clear()


def _specs(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


def _rows(at: AppTest, title: str) -> list[dict]:
    """The rows of the chart with this title (Streamlit sends a chart's data apart from its spec, as Arrow)."""
    chart = next(c for c in at.get("vega_lite_chart") if json.loads(c.proto.spec).get("title") == title)
    return [r for d in chart.proto.datasets for r in pa.ipc.open_stream(d.data.data).read_all().to_pylist()]


def _nodes(node):
    """Every node of the page's element tree under `node`, depth first."""
    yield node
    for c in _kids(node):
        yield from _nodes(c)


def _kids(node) -> list:
    return list(getattr(node, "children", {}).values())


def _charts_in(node) -> int:
    return sum(getattr(n, "type", None) == "vega_lite_chart" for n in _nodes(node))


def _x_domain(spec: dict) -> list[float]:
    return spec["layer"][0]["encoding"]["x"]["scale"]["domain"]


def test_a_model_keeps_its_colour_whatever_else_the_page_compares(app_cache):
    """The defect: colours followed the selection order, so PGD-AT changed colour with the other model."""
    seen = {}
    for models in ("standard,pgd-at", "pgd-at,trades", "trades,student:pgd-at:none,pgd-at"):
        at = open_page("distributions", {"m": models})
        no_exception(at)
        for spec in _specs(at)[:2]:  # the histogram and the accuracy chart
            for name, colour in _model_colours(spec).items():
                seen.setdefault(name, set()).add(colour)
    assert {"PGD-AT", "Standard", "TRADES", "Student of PGD-AT (untouched)"} <= set(seen)
    assert all(len(c) == 1 for c in seen.values()), seen
    assert seen["PGD-AT"] == {palette.assign(["pgd-at"])["pgd-at"]}


def test_the_histogram_axis_holds_every_sample_at_every_epsilon(app_cache):
    """The defect: the x axis stopped near 17.5 while standard-model samples reach about 21."""
    sel = views.Selection()
    recipes = {r.name: r for r in default_recipes("digits") if r.name in sel.models}
    bundle = views.load_logit_set(recipes, sel.data(), sel.attack(), sel.grid())
    largest = float(views.sample_table(bundle)["max_logit"].max())
    at = open_page("distributions", {"q": "max_logit"})
    no_exception(at)
    lo, hi = _x_domain(_specs(at)[0])
    assert hi >= largest and hi == pytest.approx(largest)


def test_class_facets_come_full_width_in_class_order_on_shared_axes_with_a_legend(app_cache):
    """The defect: the small histograms sat in the narrow left column, in the order 7, 6, 3, 2, ..., with no
    legend, and on a phone they did not fit."""
    at = open_page("distributions", {"split": "class", "q": "max_logit"})
    no_exception(at)
    specs = _specs(at)
    panels = [s for s in specs if str(s.get("title", "")).startswith("class ")]
    assert [s["title"] for s in panels] == [f"class {k}" for k in range(10)]
    assert len({json.dumps(_x_domain(s)) for s in panels}) == 1
    assert len({json.dumps(s["layer"][0]["encoding"]["y"]["scale"]) for s in panels}) == 1
    assert _x_domain(panels[0]) == _x_domain(specs[0])  # the all-samples chart above: the same x range
    assert [r["name"] for r in _rows(at, "model")] == ["Standard", "PGD-AT"]  # the legend
    # the panels are not inside the main row's columns: five a row, one in each column, below the main row
    rows = [[_charts_in(col) for col in _kids(node)] for node in _nodes(at.main)
            if any(getattr(c, "type", None) == "column" for c in _kids(node))]
    assert [r for r in rows if sum(r) >= 2] == [[1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    # phone width (390 px): nothing is drawn wider than a phone; every chart takes its column's width
    widths = [d["width"] for s in specs for d in _walk(s) if isinstance(d.get("width"), (int, float))]
    assert all(w <= 340 for w in widths), widths
    label = at.get("download_button")[0].proto.label
    assert label == "Download per-sample statistics of the selected models (CSV, every epsilon)"


def test_correct_and_incorrect_facets_share_the_x_range(app_cache):
    at = open_page("distributions", {"split": "correct", "q": "margin"})
    no_exception(at)
    panels = [s for s in _specs(at) if s.get("title") in ("correct", "incorrect")]
    assert [s["title"] for s in panels] == ["correct", "incorrect"]
    assert _x_domain(panels[0]) == _x_domain(panels[1])
    assert list(dict.fromkeys(at.dataframe[0].value["group"])) == ["correct", "incorrect"]


def _wait(at: AppTest, seconds: float = 150) -> AppTest:
    deadline = time.time() + seconds
    for job in jobs.active():
        assert job.wait(max(1.0, deadline - time.time())), f"{job.label} did not finish in {seconds} s"
    return at.run()


def test_embedding_colours_by_model_and_a_linked_selection_shows_every_model(app_cache):
    """The defects: shape was the only cue for the model, the thumbnails showed only the first model's
    images, and a selection could not be shared in a link."""
    at = _wait(open_page("embedding", {"ecolor": "model", "sel": "-1000,1000,-1000,1000"}))
    no_exception(at)
    spec = _specs(at)[0]
    assert _model_colours(spec) == {"Standard": palette.assign(["standard"])["standard"],
                              "PGD-AT": palette.assign(["pgd-at"])["pgd-at"]}
    assert "came from the link" in texts(at)
    summary = at.dataframe[0].value
    assert list(summary["model"]) == ["Standard", "PGD-AT"] and list(summary["points"]) == [360, 360]
    assert np.isclose(summary["share"].sum(), 1.0)
    images = at.image
    assert len(images) == 2 and [len(i.proto.imgs) for i in images] == [24, 24]  # evenly from each model
    said = texts(at)
    assert "**Standard**: 360 points, showing 24" in said and "**PGD-AT**: 360 points, showing 24" in said
    assert at.query_params["sel"] in ("-1000,1000,-1000,1000", ["-1000,1000,-1000,1000"])
    at.button(key="clear_sel").click().run()
    no_exception(at)
    assert "came from the link" not in texts(at) and "Nothing selected yet" in texts(at)
    assert "sel" not in at.query_params
    # a rectangle dragged on the map goes into the link (rounded outward), and the link opens it again
    at.session_state["map"] = {"selection": {"brush": {"x": [100.5, -100.12345], "y": [-100, 100]}}}
    at.run()
    no_exception(at)
    assert at.query_params["sel"] in ("-100.124,100.5,-100,100", ["-100.124,100.5,-100,100"])
    assert "came from the link" not in texts(at) and "720 points selected" in texts(at)
    again = _wait(open_page("embedding", {"sel": "-100.124,100.5,-100,100"}))
    assert "came from the link" in texts(again) and "720 points selected" in texts(again)
    at.session_state["map"] = {"selection": {"brush": {}}}  # a double-click clears the rectangle, and the link's
    at.run()
    assert "sel" not in at.query_params and "Nothing selected yet" in texts(at)
    bad = _wait(open_page("embedding", {"sel": "1,0,0,1"}))  # not a rectangle: ignored and listed
    no_exception(bad)
    assert "Nothing selected yet" in texts(bad) and "Ignored link settings" in texts(bad)
