"""Helpers the tests share: open a page as a link does, read what it says, check it raised nothing; point
the cache at a folder for a block (session fixtures, which monkeypatch cannot serve)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from streamlit.testing.v1 import AppTest

TIMEOUT = 120  # seconds a page run may take in a test (a loaded CI machine, a first page's imports)


def open_page(page: str, query: dict | None = None, timeout: float = TIMEOUT) -> AppTest:
    """Run app.py with the link's query parameters, then open `page`, as a link to it does."""
    at = AppTest.from_file("../app.py", default_timeout=timeout)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    if page != "overview":
        at.switch_page(f"pages/{page}.py")
    return at.run()


def texts(at: AppTest) -> str:
    """Everything the page says in words: markdown, notices, captions and titles."""
    parts = [m.value for m in at.markdown] + [e.body for e in at.info] + [e.body for e in at.error]
    parts += [e.body for e in at.warning] + [c.value for c in at.caption] + [t.value for t in at.title]
    return "\n".join(str(p) for p in parts)


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


@contextmanager
def using_cache(path: Path) -> Iterator[Path]:
    """LOGITSCOPE_CACHE set to `path` inside the block, restored (or unset) after it."""
    old = os.environ.get("LOGITSCOPE_CACHE")
    os.environ["LOGITSCOPE_CACHE"] = str(path)
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop("LOGITSCOPE_CACHE", None)
        else:
            os.environ["LOGITSCOPE_CACHE"] = old


def served_env() -> dict:
    """The environment to serve the app with in a browser test: this one, without the test session's
    one-process setting for the app's jobs (conftest), so the served app runs with its real default."""
    return {k: v for k, v in os.environ.items() if k != "LOGITSCOPE_APP_WORKERS"}


@contextmanager
def opened(browser, url: str, title: str, timeout: float = 60, width: int = 1400, height: int = 900):
    """A new browser tab at `url`, once its page shows `title` and has settled; closed after the block."""
    from bench.appserver import settle

    page = browser.new_page(viewport={"width": width, "height": height})
    try:
        page.goto(url, wait_until="domcontentloaded")
        settle(page, title, timeout=timeout)
        yield page
    finally:
        page.close()
