"""Layouts in a real browser, at a desktop's 1400 px and a phone's 390 px: no chart overlaps another, no axis
title is clipped, nothing spills sideways, and long pages stay browsable.

Each view is opened by its link in headless Debian Chromium (the session's `server` and `browser`
fixtures, tests/conftest.py), allowed to settle, measured in the page with JavaScript, and saved as a
full-page screenshot in test-artifacts/ (layout-<view>-<width>.png; the README's screenshots come from
these).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from apptest import opened

from bench.appserver import PAGES, settle

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
WIDTHS = (1400, 390)
VIEWS = {  # name -> (URL path and query, the title that shows it rendered)
    "overview": ("", PAGES[""]),
    "distributions": ("distributions", PAGES["distributions"]),
    "distributions-by-class": ("distributions?split=class", PAGES["distributions"]),
    "distributions-by-outcome": ("distributions?split=correct&q=logit_gap", PAGES["distributions"]),
    "differences": ("differences", PAGES["differences"]),
    "lab": ("lab", PAGES["lab"]),
    "embedding": ("embedding?ecolor=model", PAGES["embedding"]),
    "why": ("why", PAGES["why"]),
    "across": ("across", "Across models"),
    "across-by-source": ("across?by=source&x=mean_logit_gap&pick=pgd-at", "Across models"),
}
MAX_HEIGHT = 9000  # px: a page taller than this at a phone's width is a page nobody scrolls through

# Every chart's box, and each axis title's box next to the box of the chart that draws it (Vega's SVG
# marks titles with the class role-axis-title). Boxes are in page coordinates.
MEASURE = """() => {
  const box = e => { const r = e.getBoundingClientRect();
                     return {x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height}; };
  const charts = [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')].filter(
    c => c.getBoundingClientRect().width > 0);
  const titles = [];
  charts.forEach((c, i) => c.querySelectorAll('.role-axis-title text, .role-title text').forEach(t => {
    if (t.textContent.trim()) titles.push({chart: i, text: t.textContent, box: box(t)}); }));
  const main = document.querySelector('[data-testid="stMain"]');
  return {charts: charts.map(box), titles, width: innerWidth,
          scrollWidth: document.documentElement.scrollWidth,
          height: main ? main.scrollHeight : document.body.scrollHeight};
}"""


def _overlap(a: dict, b: dict) -> float:
    w = min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"])
    h = min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"])
    return max(w, 0) * max(h, 0)


def _inside(inner: dict, outer: dict, slack: float = 5.0) -> bool:
    """`inner` lies within `outer`, give or take `slack` px (Vega draws a title's glyphs a few px past the
    chart's box, which clips nothing; a clipped title is cut by tens of px)."""
    return (inner["x"] >= outer["x"] - slack and inner["y"] >= outer["y"] - slack
            and inner["x"] + inner["w"] <= outer["x"] + outer["w"] + slack
            and inner["y"] + inner["h"] <= outer["y"] + outer["h"] + slack)


def layout_problems(m: dict) -> list[str]:
    """What is wrong with a measured page: overlapping charts, clipped axis titles, sideways overflow."""
    out = []
    charts = m["charts"]
    for i in range(len(charts)):
        for j in range(i + 1, len(charts)):
            if _overlap(charts[i], charts[j]) > 4:
                out.append(f"charts {i} and {j} overlap")
    for t in m["titles"]:
        if not _inside(t["box"], charts[t["chart"]]):
            out.append(f"axis title {t['text']!r} of chart {t['chart']} is clipped")
    if m["scrollWidth"] > m["width"] + 2:
        out.append(f"the page is {m['scrollWidth']} px wide in a {m['width']} px window")
    return out


def test_the_checks_catch_overlap_and_clipping():
    """The measure's verdicts on hand-made boxes: they would fail a broken page."""
    chart = {"x": 0, "y": 0, "w": 300, "h": 200}
    ok = {"charts": [chart, {"x": 0, "y": 210, "w": 300, "h": 200}], "width": 400, "scrollWidth": 400,
          "titles": [{"chart": 0, "text": "density", "box": {"x": 5, "y": 80, "w": 12, "h": 60}}]}
    assert layout_problems(ok) == []
    bad = {**ok, "charts": [chart, {"x": 100, "y": 150, "w": 300, "h": 200}], "scrollWidth": 700,
           "titles": [{"chart": 0, "text": "incorrect", "box": {"x": 250, "y": -30, "w": 90, "h": 14}}]}
    assert layout_problems(bad) == ["charts 0 and 1 overlap", "axis title 'incorrect' of chart 0 is clipped",
                                    "the page is 700 px wide in a 400 px window"]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("view", list(VIEWS))
def test_pages_hold_their_layout(server, browser, view, width):
    ARTIFACTS.mkdir(exist_ok=True)
    path, title = VIEWS[view]
    page = browser.new_page(viewport={"width": width, "height": 900 if width > 500 else 844})
    try:
        page.goto(f"{server}/{path}", wait_until="domcontentloaded")
        settle(page, title, timeout=150 if view == "embedding" else 90)
        page.wait_for_timeout(1000)  # Vega draws after the page settles
        m = page.evaluate(MEASURE)
        # Streamlit scrolls inside its main block: grow the window to the content to capture all of it
        page.set_viewport_size({"width": width, "height": int(min(max(m["height"], 844), MAX_HEIGHT))})
        page.wait_for_timeout(800)
        page.screenshot(path=str(ARTIFACTS / f"layout-{view}-{width}.png"), full_page=True)
        m = page.evaluate(MEASURE)
        errors = page.locator('[data-testid="stException"]')
        assert errors.count() == 0, errors.first.inner_text()
        assert layout_problems(m) == []
        assert m["height"] < MAX_HEIGHT, f"{view} is {m['height']} px tall at {width} px"
    finally:
        page.close()


def test_the_overview_answers_at_its_own_path_too(server, browser):
    """The default page lives at /; /overview (its name in the navigation) opens it as well."""
    with opened(browser, f"{server}/overview", PAGES[""], timeout=90) as page:
        assert page.get_by_text("Page not found", exact=False).count() == 0
        assert page.get_by_text("The findings in this cache", exact=False).count() > 0
