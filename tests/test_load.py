"""A bounded load test: many browser sessions at once on the running app, on 127.0.0.1.

Starts `streamlit run app.py` on a copy of the trained study cache from which one logits entry was
removed, opens SESSIONS pages at the same moment in headless Chromium (several contexts, several
pages each: every page is its own Streamlit session), waits for all of them, then moves epsilon on
some. It checks that every session is served without an exception, that the missing entry is
computed exactly once (one file written, whoever asked) and nothing else is rewritten, and that the
server's memory stays under a bound. Uses Debian's /usr/bin/chromium; never downloads a browser.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from apptest import served_env

from bench.appserver import serve_app

pytestmark = pytest.mark.browser

SESSIONS = [  # (URL path and query, the title that shows it was served)
    ("distributions?eps=0.05", "Logit distributions"),
    ("distributions?eps=0.1&m=pgd-at,trades", "Logit distributions"),
    ("differences?eps=0.05", "Confidence differences"),
    ("differences?eps=0.2&m=standard,pgd-at,trades", "Confidence differences"),
    ("?eps=0.05", "Logitscope"),
    ("distributions?eps=0.3&q=logit_gap", "Logit distributions"),
    ("why?teps=0.3", "Why adversarial training shrinks logits"),
    ("lab", "Distillation lab"),
]
MOVED = (0, 1, 5)          # sessions whose epsilon scrubber is then moved, step by step
RSS_LIMIT_MB = 2048        # the server: Python, torch, Streamlit and every session's state (about 1.1 GB measured)
REMOVED = ("pgd-at", 0.0)   # the entry every session above needs and nobody has computed yet (clean: quick)


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:  # the server has exited
        pass
    return 0.0


def _files(cache: Path) -> dict[str, tuple[int, int]]:
    """Every model and logits file, by path: (inode, mtime). A rewrite (atomic rename) changes both."""
    return {str(p.relative_to(cache)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for sub in ("models", "logits") for p in (cache / sub).rglob("*")
            if p.is_file() and not p.name.endswith(".lock")}


class Watcher(threading.Thread):
    """Samples the server's memory and the removed entry's inode every 50 ms."""

    def __init__(self, pid: int, entry: Path):
        super().__init__(daemon=True)
        self.pid, self.entry, self.stop = pid, entry, threading.Event()
        self.inodes: list[int] = []
        self.peak_mb = 0.0

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak_mb = max(self.peak_mb, _rss_mb(self.pid))
            try:
                ino = self.entry.stat().st_ino
                if not self.inodes or self.inodes[-1] != ino:
                    self.inodes.append(ino)
            except OSError:
                pass
            time.sleep(0.05)


@pytest.fixture(scope="module")
def app(_study_dir, chromium, tmp_path_factory):
    if not Path("/proc/self/status").exists():
        pytest.skip("reads the server's memory from /proc (Linux)")
    from core.app.views import Selection
    from core.engine.logits import entry_path
    from core.study.recipes import default_recipes

    cache = tmp_path_factory.mktemp("load") / "cache"
    shutil.copytree(_study_dir, cache, ignore=shutil.ignore_patterns("*.lock", "lab", "embeddings"))
    old = os.environ.get("LOGITSCOPE_CACHE")
    os.environ["LOGITSCOPE_CACHE"] = str(cache)
    try:
        sel = Selection("digits")
        recipe = {r.name: r for r in default_recipes("digits")}[REMOVED[0]]
        entry = entry_path(recipe.key, sel.data(), None if REMOVED[1] == 0 else sel.attack().at(REMOVED[1]))
    finally:
        os.environ.pop("LOGITSCOPE_CACHE") if old is None else os.environ.__setitem__("LOGITSCOPE_CACHE", old)
    entry.unlink()
    log = tmp_path_factory.mktemp("load-log") / "streamlit.log"
    with serve_app({**served_env(), "LOGITSCOPE_CACHE": str(cache)}, log) as (url, proc):
        yield {"url": url, "pid": proc.pid, "cache": cache, "entry": entry}


def _settled(page, title: str) -> bool:
    """The page shows its title, waits for nothing, and its script is not running."""
    return (page.get_by_text(title, exact=False).count() > 0
            and page.locator('[data-testid="stStatusWidget"]').count() == 0
            and page.get_by_text("Waiting for:", exact=False).count() == 0)


def _wait_all(pages, titles, timeout: float) -> None:
    """Poll every page until each has been settled for 1.5 s; fail listing those that never did."""
    deadline, quiet = time.time() + timeout, {}
    while time.time() < deadline:
        for i, (page, title) in enumerate(zip(pages, titles)):
            if _settled(page, title):
                quiet.setdefault(i, time.time())
            else:
                quiet.pop(i, None)
        if len(quiet) == len(pages) and all(time.time() - t > 1.5 for t in quiet.values()):
            return
        time.sleep(0.25)
    slow = [SESSIONS[i][0] for i in range(len(pages)) if i not in quiet]
    raise AssertionError(f"sessions not served within {timeout} s: {slow}")


def _no_exception(pages) -> None:
    for (path, _), page in zip(SESSIONS, pages):
        errors = page.locator('[data-testid="stException"]')
        assert errors.count() == 0, f"/{path}: {errors.first.inner_text()}"


def test_many_sessions_at_once_are_served_compute_nothing_twice_and_stay_bounded(app, browser):
    before = _files(app["cache"])
    watcher = Watcher(app["pid"], app["entry"])
    watcher.start()
    t0 = time.time()
    contexts = [browser.new_context(viewport={"width": 1280, "height": 900}) for _ in range(len(SESSIONS) // 2)]
    try:
        pages = [contexts[i % len(contexts)].new_page() for i in range(len(SESSIONS))]
        for page, (path, _) in zip(pages, SESSIONS):  # all at once: no page waits for another
            page.goto(f"{app['url']}/{path}", wait_until="commit")
        titles = [t for _, t in SESSIONS]
        _wait_all(pages, titles, timeout=60)
        _no_exception(pages)

        for i in MOVED:  # move epsilon with the keyboard on the page's scrubber, as a person would
            thumb = pages[i].locator('[data-testid="stMain"] [data-testid="stSlider"] input[type="range"]').first
            thumb.focus()
            for key in ("ArrowRight", "ArrowRight", "ArrowLeft"):
                thumb.press(key)
                pages[i].wait_for_timeout(300)
        _wait_all(pages, titles, timeout=30)
        _no_exception(pages)
        moved = [pages[i].url for i in MOVED]
    finally:
        for c in contexts:  # the session's browser stays for the other browser tests
            c.close()
    watcher.stop.set()
    watcher.join()
    elapsed = time.time() - t0

    assert all("eps=" in u for u in moved) and moved != [f"{app['url']}/{SESSIONS[i][0]}" for i in MOVED], moved
    after = _files(app["cache"])
    name = str(app["entry"].relative_to(app["cache"]))
    assert name in after, "the missing entry was never computed"
    assert len(watcher.inodes) == 1, f"the missing entry was written {len(watcher.inodes)} times"
    assert {k: v for k, v in after.items() if k != name} == before, "cached files were rewritten"
    assert watcher.peak_mb < RSS_LIMIT_MB, f"server memory peaked at {watcher.peak_mb:.0f} MB"
    print(f"\n{len(SESSIONS)} sessions served in {elapsed:.1f} s; server peak memory {watcher.peak_mb:.0f} MB")
