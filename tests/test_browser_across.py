"""The "Across models" page in a real browser: hovering a point shows its titled tooltip, clicking it picks the model
and offers to open it on the other pages; no exception on the way."""

from __future__ import annotations

from pathlib import Path

import pytest
from apptest import opened

from bench.appserver import settle

pytestmark = pytest.mark.browser

TITLE = "Across models"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
POINTS = '[data-testid="stVegaLiteChart"] .mark-symbol path'  # the models' points (the error bars are rules)


def no_exception(page) -> None:
    errors = page.locator('[data-testid="stException"]')
    assert errors.count() == 0, errors.first.inner_text()


def test_hovering_and_clicking_a_point(server, browser):
    with opened(browser, f"{server}/across", TITLE, timeout=90) as page:
        page.wait_for_timeout(1000)  # Vega draws after the page settles
        points = page.locator(POINTS)
        assert points.count() >= 10, points.count()  # the study's models
        point = points.nth(1)
        point.scroll_into_view_if_needed()
        point.hover(force=True)
        tooltip = page.locator("#vg-tooltip-element")
        tooltip.wait_for(state="visible", timeout=10_000)
        tip = tooltip.inner_text()
        for title in ("model", "method", "training eps", "seed", "architecture", "attack of y"):
            assert title in tip, tip
        point.click(force=True)
        page.get_by_role("button", name="Open in Confidence differences").wait_for(timeout=30_000)
        settle(page, TITLE, timeout=30)
        no_exception(page)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "page-across-picked.png"), full_page=True)
        page.get_by_role("button", name="Open in Confidence differences").click()
        settle(page, "Confidence differences", timeout=60)
        assert "/differences" in page.url
        no_exception(page)
