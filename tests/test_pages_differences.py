"""The confidence differences page through AppTest: clean by default, one epsilon per screen said everywhere,
the selected sample right below the chart and brought into view, clean and attacked logits, wrapping thumbnails."""

from __future__ import annotations

import json

import pytest
from apptest import no_exception, open_page, texts

from core.app import jobs


@pytest.fixture(autouse=True)
def no_jobs_left():
    jobs.clear()
    yield
    jobs.clear()


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _chart_titles(at) -> list[str]:
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    return [f"{s['title']['text']}, {s['title']['subtitle']}" for s in specs if isinstance(s.get("title"), dict)]


def _scrolls(at) -> list[str]:
    return [h.proto.body for h in at.get("html") if "scrollIntoView" in h.proto.body]


def test_the_page_opens_on_clean_images_and_says_so_everywhere(app_cache):
    at = open_page("differences")
    no_exception(at)
    assert at.radio(key="w.on").value == "clean" and at.query_params["on"] == "clean"
    assert _metrics(at)["Epsilon"] == "0 (clean)"
    heads = [s.value for s in at.subheader]
    assert "Confidence of A against B, on clean images" in heads
    assert "The largest confidence differences, on clean images" in heads
    rows = [m.value for m in at.markdown if "more confident than" in m.value]
    assert len(rows) == 2 and all(r.endswith("on clean images") or r.endswith("on clean images.") for r in rows), rows
    assert "epsilon 0.1" not in " ".join(heads + rows)
    clean = _metrics(at)["Spearman correlation"]

    at.radio(key="w.on").set_value("attacked").run()
    no_exception(at)
    assert at.query_params["on"] == "attacked" and _metrics(at)["Epsilon"] == "0.1 (PGD)"
    assert "Confidence of A against B, under PGD at epsilon 0.1" in [s.value for s in at.subheader]
    assert _metrics(at)["Spearman correlation"] != clean
    assert "attacked images (PGD at epsilon 0.1, the sidebar's)" in at.radio(key="w.on").options


def test_a_link_opens_the_attacked_view_and_a_bad_choice_falls_back(app_cache):
    at = open_page("differences", {"on": "attacked", "eps": "0.05"})
    no_exception(at)
    assert at.radio(key="w.on").value == "attacked" and _metrics(at)["Epsilon"] == "0.05 (PGD)"
    bad = open_page("differences", {"on": "adversarial"})
    no_exception(bad)
    assert bad.radio(key="w.on").value == "clean" and "on=adversarial" in texts(bad)


def test_model_names_are_display_names_and_keys_stay_in_the_link(app_cache):
    at = open_page("differences", {"m": "standard,student:pgd-at:none"})
    no_exception(at)
    a, b = at.selectbox(key="w.a"), at.selectbox(key="w.b")
    assert a.options == ["Standard", "Student of PGD-AT (untouched)"] and a.value == "standard"
    assert b.value == "student:pgd-at:none" and at.query_params["b"] == "student:pgd-at:none"
    words = texts(at)
    assert "Student of PGD-AT (untouched) (B)" in words and "student:pgd-at:none" not in words


def test_the_detail_sits_below_the_scatter_and_a_selection_scrolls_to_it_once(app_cache):
    at = open_page("differences")
    heads = [s.value for s in at.subheader]
    assert heads[0].startswith("Confidence of A against B") and heads[1].startswith("Sample #")
    assert heads[2].startswith("The largest confidence differences")
    assert _scrolls(at) == []  # opening the page selects nothing
    at.button(key="inspect.b.0").click().run()
    no_exception(at)
    chosen = at.number_input(key="w.i").value
    assert at.subheader[1].value.startswith(f"Sample #{chosen} ")
    scrolls = _scrolls(at)
    assert len(scrolls) == 1 and '"selected-sample"' in scrolls[0]
    assert at.subheader[1].proto.anchor == "selected-sample"
    at.radio(key="w.color").set_value("outcome").run()  # a rerun that selects nothing: no scroll
    assert _scrolls(at) == [] and at.number_input(key="w.i").value == chosen
    at.button(key="inspect.a.1").click().run()
    assert len(_scrolls(at)) == 1 and _scrolls(at)[0] != scrolls[0]  # a fresh script: the browser runs it again


def test_the_detail_shows_clean_and_attacked_logits_with_their_scales_explained(app_cache):
    at = open_page("differences")
    no_exception(at)
    assert _chart_titles(at) == ["Logits on the clean image, no attack (epsilon 0)",
                                 "Logits on the attacked image, PGD at epsilon 0.1, the sidebar's, against each model"]
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")][1:]
    assert specs[0]["encoding"]["y"]["scale"] == specs[1]["encoding"]["y"]["scale"]  # one logit scale
    assert specs[0]["encoding"]["color"]["scale"]["domain"] == ["Standard", "PGD-AT"]
    words = texts(at)
    assert "The outlined bar is the true class." in words
    ticks = [c.value for c in at.caption if c.value in ("−0.1", "0", "+0.1")]
    assert ticks == ["−0.1", "0", "+0.1"] * 2  # under each perturbation, its scale
    at.sidebar.select_slider(key="w.eps").set_value(0.0).run()
    no_exception(at)
    assert _chart_titles(at) == ["Logits on the clean image, no attack (epsilon 0)"] and "Raise epsilon in the sidebar" in texts(at)


def test_thumbnails_wrap_in_a_row_instead_of_one_column_each(app_cache):
    at = open_page("differences")
    no_exception(at)
    blocks = [b for b in at.main.children.values() if b.type == "flex_container"]
    columns = [b for b in blocks if any(type(c).__name__ == "Column" for c in b.children.values())]
    assert max(len(b.children) for b in columns) <= 4  # st.columns stack on a phone: none of 8 (or 5) left
    thumbs = [b for b in blocks if any(getattr(e, "type", None) == "button" for c in b.children.values()
                                       if type(c).__name__ == "Block" for e in c.children.values())]
    assert len(thumbs) == 2
    for row in thumbs:
        box = row.proto.flex_container
        assert box.direction == box.HORIZONTAL and box.wrap  # several per line, wrapping at any width
        assert all(c.proto.width_config.pixel_width for c in row.children.values())  # fixed-width items
