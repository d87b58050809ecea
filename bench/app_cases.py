"""Benchmarks of the app: start-up, the hosted demo's memory, and how soon a fresh start shows the findings."""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.common import ROOT, Result, judge, workspace

_WARM = """
import time, sys
t = time.perf_counter()
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=120)
at.run()
assert not at.exception, [e.message for e in at.exception]
print(time.perf_counter() - t)
"""


def warm_start_seconds(quick: bool) -> list[Result]:
    """The app from a warm cache to its first rendered page (AppTest, in a fresh process)."""
    ws = workspace()
    ws.fill()
    blank = ws.cache / "blank_app.py"
    blank.write_text("import streamlit as st\nst.title('blank')\n")

    def measure(script: Path) -> float:
        out = subprocess.run([sys.executable, "-c", _WARM, str(script)], cwd=ROOT, env=ws.env(), check=True,
                             capture_output=True, text=True).stdout
        return float(out.strip().splitlines()[-1])

    repeats = 1 if quick else 3
    value = statistics.median(measure(ROOT / "app.py") for _ in range(repeats))
    ref = statistics.median(measure(blank) for _ in range(repeats))
    goal = "value <= 3"
    return [Result("warm_start_seconds", value, "s", ref, ref / value, goal, judge(goal, value, None),
                   "process start to first rendered overview page; reference = a blank Streamlit page")]


# Peak RSS of a process that imports the libraries alone. Linux: VmHWM, which starts afresh at exec;
# ru_maxrss would keep the high-water mark of the forked copy of this (large) benchmark process.
_FLOOR = """
import resource, sys, torch, streamlit, pandas, altair
try:
    hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    print(int(hwm.split()[1]) / 1024)
except OSError:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 ** 2 if sys.platform == "darwin" else 1024))
"""


def demo_peak_rss(quick: bool) -> list[Result]:
    """Peak memory of the hosted-demo mode serving a digits bundle, every page opened in Chromium."""
    from bench.demo import demo_peak_rss_mb

    workspace().fill()
    value = demo_peak_rss_mb(quick)
    floor = subprocess.run([sys.executable, "-c", _FLOOR], check=True, capture_output=True, text=True).stdout
    ref = float(floor.strip().splitlines()[-1])
    goal = "value <= 1000"
    return [Result("demo_peak_rss_mb", value, "MB", ref, ref / value, goal, judge(goal, value, None),
                   f"torch {torch.__version__}; reference = importing torch + streamlit alone (MB)")]




FINDING = re.compile(r"(?<!\d)(1|2|3a|3b-[a-z]+) \u2014 (holds|reversed|not resolved)")


def _findings(text: str) -> tuple[bool, bool]:
    """(any finding stated, every robustness finding stated under AutoAttack) in the overview's text.

    A provisional statement reads "3a — holds under PGD-20, provisionally"; once AutoAttack's entries are
    cached the page states it without that word."""
    from core.study.findings import ROBUST_IDS

    ids = {m.group(1) for m in FINDING.finditer(text)}
    return bool(ids), set(ROBUST_IDS) <= ids and "provisionally" not in text


def app_findings_seconds(quick: bool) -> list[Result]:
    """`streamlit run app.py` on an empty cache, the overview open in headless Chromium: seconds from the page's
    first request until it shows findings (each labelled with its attack), and until the robustness findings
    stand under AutoAttack. Full suite only (minutes of training and attacking). The page's text is read once a
    second as `textContent`, which costs the browser no layout: read as rendered text (`inner_text`) twice a
    second, it took about a sixth of the machine from the work it measures."""
    import tempfile

    from playwright.sync_api import sync_playwright

    from bench.appserver import launch_chromium, serve_app

    limit = 900.0
    first = reliable = None
    with tempfile.TemporaryDirectory(prefix="logitscope-bench-app-") as tmp:
        env = {**workspace().env(), "LOGITSCOPE_CACHE": str(Path(tmp) / "cache")}
        with serve_app(env, Path(tmp) / "streamlit.log") as (url, _), sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            start = time.perf_counter()
            page.goto(url, wait_until="domcontentloaded")
            while time.perf_counter() - start < limit and reliable is None:
                stated, robust = _findings(page.evaluate("document.body.textContent"))
                now = time.perf_counter() - start
                first = now if stated and first is None else first
                reliable = now if robust else None
                time.sleep(1.0)
            browser.close()
    rows = []
    for name, value, goal in (("app_first_findings_seconds", first, "value <= 25"),
                              ("app_reliable_findings_seconds", reliable, "value <= 45")):
        value = limit if value is None else value
        rows.append(Result(name, value, "s", None, None, goal, judge(goal, value, None),
                           f"fresh cache, 1400x1000 headless Chromium, overview read every 1 s (gave up at "
                           f"{limit:g} s); no reference"))
    return rows
