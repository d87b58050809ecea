"""The app in a real browser: every page opens in headless Chromium without an exception.

Starts `streamlit run app.py` on 127.0.0.1 against the trained study cache, visits each page by its
URL path, waits for the page to settle, fails on any exception element, and saves a screenshot per
page into test-artifacts/ (git-ignored). Uses Debian's /usr/bin/chromium; never downloads a browser.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from apptest import opened

from bench.appserver import PAGES, settle

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


@pytest.mark.parametrize("path", list(PAGES))
def test_page_opens_without_exception(server, browser, path):
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    try:
        page.goto(f"{server}/{path}", wait_until="domcontentloaded")
        settle(page, PAGES[path], timeout=120 if path == "embedding" else 60)
        # Streamlit scrolls inside its main block: grow the viewport to the content to capture it all.
        height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]')?.scrollHeight || 1000")
        page.set_viewport_size({"width": 1440, "height": int(min(max(height, 1000), 8000))})
        page.wait_for_timeout(800)
        page.screenshot(path=str(ARTIFACTS / f"page-{path or 'overview'}.png"), full_page=True)
        errors = page.locator('[data-testid="stException"]')
        assert errors.count() == 0, errors.first.inner_text()
        assert page.get_by_text("Waiting for:", exact=False).count() == 0, f"/{path} never finished loading"
    finally:
        page.close()


def test_lab_run_finishes_and_the_page_refreshes_by_itself(server, browser):
    """A distillation started from the browser shows progress, then its results without a reload."""
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    try:
        page.goto(f"{server}/lab?manip=flatten_nonmax&epochs=2&seed=4", wait_until="domcontentloaded")
        settle(page, PAGES["lab"], timeout=60)
        page.get_by_role("button", name="Distill").click()
        page.get_by_text("Clean accuracy").first.wait_for(timeout=120_000)  # appears once the job is done
        settle(page, PAGES["lab"], timeout=30)
        assert page.get_by_text("lab:pgd-at:flatten_nonmax epochs=2 seed=4").count() > 0
        height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]')?.scrollHeight || 1000")
        page.set_viewport_size({"width": 1440, "height": int(min(max(height, 1000), 8000))})
        page.wait_for_timeout(800)
        page.screenshot(path=str(ARTIFACTS / "page-lab-after-run.png"), full_page=True)
        errors = page.locator('[data-testid="stException"]')
        assert errors.count() == 0, errors.first.inner_text()
    finally:
        page.close()


def test_selected_runs_open_on_the_other_pages(server, browser):
    """Selecting a run in the lab's table and pressing Compare opens it, with its teacher, on Logit distributions.
    The run is the one the test above made (lab:pgd-at:flatten_nonmax epochs=2 seed=4)."""
    with opened(browser, f"{server}/lab?manip=flatten_nonmax&epochs=2&seed=4", PAGES["lab"]) as page:
        button = page.get_by_role("button", name="Compare 1 selected on the other pages")
        assert button.count() == 0  # nothing selected yet: "Compare 0 selected"
        table = page.locator('[data-testid="stDataFrame"]').last
        table.scroll_into_view_if_needed()
        box = table.bounding_box()
        page.mouse.click(box["x"] + 18, box["y"] + 35 + 17)  # the first row's selection box, under the header
        button.wait_for(timeout=30_000)
        button.click()
        settle(page, PAGES["distributions"], timeout=60)
        assert "/distributions" in page.url and "flatten_nonmax" in page.url and "pgd-at" in page.url
        assert page.get_by_text("Lab: student of PGD-AT (non-max flattened), epochs=2, seed=4", exact=False).count()
        errors = page.locator('[data-testid="stException"]')
        assert errors.count() == 0, errors.first.inner_text()


def test_inspecting_an_image_brings_the_sample_detail_into_view(server, browser):
    with opened(browser, f"{server}/differences", PAGES["differences"]) as page:
        button = page.get_by_role("button", name="Inspect").nth(3)
        button.scroll_into_view_if_needed()  # the image rows are below the detail: it is now out of sight
        detail = page.locator("#selected-sample")
        assert detail.bounding_box()["y"] < 0
        button.click()
        settle(page, PAGES["differences"], timeout=60)
        page.wait_for_timeout(1500)  # the smooth scroll
        top = detail.bounding_box()["y"]
        assert 0 <= top < 900 / 2, f"the detail's heading is at {top:.0f} px"
