"""Memory of the hosted demo: peak RSS of `streamlit run app.py` serving a digits bundle, every page visited.

`demo_peak_rss_mb(quick)` builds a digits bundle (from the cache in LOGITSCOPE_CACHE if it holds the
trained digits study, else from a fresh study trained into a temporary folder, about a minute on two
cores), starts the app in demo mode on a free local port, opens every page in headless Chromium (Debian's
/usr/bin/chromium through the `playwright` package), makes it fit one UMAP map (the worst case: the
bundle's own maps cover only the default view) and, unless `quick`, runs one live distillation in the lab. The figure is the server process's peak resident set size (Linux: VmHWM of /proc/<pid>/status;
elsewhere: ru_maxrss of the waited-for child), in MB. A small hosting plan (Streamlit Community Cloud)
gives about 1 GB, so the goal is "value <= 1000".
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
from pathlib import Path

from bench.appserver import CHROMIUM, PAGES, launch_chromium, serve_app, settle


def _vmhwm_mb(pid: int) -> float | None:
    """Peak resident set size of a live process (Linux), in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def make_digits_bundle(out: Path) -> Path:
    """A bundle of the digits study: from LOGITSCOPE_CACHE if it is trained there, else trained in a temp folder."""
    from core.app.bundle import write_bundle
    from core.study.recipes import default_recipes, is_trained

    if all(is_trained(r) for r in default_recipes("digits")):
        from core.study.precompute import precompute

        precompute("digits", default_recipes("digits"))  # any missing logits of the default grid (seconds when cached)
        return write_bundle("digits", out).path
    with tempfile.TemporaryDirectory() as tmp:
        old = os.environ.get("LOGITSCOPE_CACHE")
        os.environ["LOGITSCOPE_CACHE"] = tmp
        try:
            from core.study.precompute import precompute

            precompute("digits", default_recipes("digits"))  # the study and its PGD grid (reproduce adds AutoAttack)
            return write_bundle("digits", out).path
        finally:
            if old is None:
                os.environ.pop("LOGITSCOPE_CACHE", None)
            else:
                os.environ["LOGITSCOPE_CACHE"] = old


def _visit(url: str, lab_run: bool) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            for path, title in PAGES.items():
                page.goto(f"{url}/{path}", wait_until="domcontentloaded")
                settle(page, title, 180 if path == "embedding" else 90)
                if path == "embedding":  # the default map is bundled; 20 neighbours makes the app fit UMAP itself
                    page.get_by_text("Nothing selected yet", exact=False).first.wait_for(timeout=180_000)
                    page.goto(f"{url}/embedding?nn=20", wait_until="domcontentloaded")
                    settle(page, title, 180)
                    page.get_by_text("Nothing selected yet", exact=False).first.wait_for(timeout=180_000)
            if lab_run:
                page.goto(f"{url}/lab?manip=flatten_nonmax&epochs=2&seed=3", wait_until="domcontentloaded")
                settle(page, PAGES["lab"], 90)
                page.get_by_role("button", name="Distill").click()
                page.get_by_text("Clean accuracy").first.wait_for(timeout=180_000)
                settle(page, PAGES["lab"], 60)
        finally:
            browser.close()


def demo_peak_rss_mb(quick: bool, python: str | None = None) -> float:
    """Peak RSS (MB) of the app serving a digits bundle while every page is opened (and, unless quick, a lab run),
    served from the hosted demo's entry point, demo/streamlit_app.py.

    `python`: the interpreter that serves the app (default: this one), e.g. a virtual environment with the
    CPU-only torch wheel, as a small host installs it.
    """
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"no Chromium at {CHROMIUM}: install Debian's chromium (or set LOGITSCOPE_CHROMIUM)")
    with tempfile.TemporaryDirectory() as tmp:
        bundle = make_digits_bundle(Path(tmp) / "digits-bundle.zip")
        env = {**os.environ, "LOGITSCOPE_DEMO": str(bundle), "LOGITSCOPE_CACHE": str(Path(tmp) / "unused")}
        with serve_app(env, Path(tmp) / "streamlit.log", python, script="demo/streamlit_app.py") as (url, proc):
            _visit(url, lab_run=not quick)
            peak = _vmhwm_mb(proc.pid)
        if peak is None:  # not Linux: the largest waited-for child (KB on Linux, bytes on macOS)
            rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            peak = rss / 1024 / (1024 if sys.platform == "darwin" else 1)
        return float(peak)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench.demo", description="Peak memory of the hosted-demo mode.")
    p.add_argument("--quick", action="store_true", help="skip the live distillation in the lab")
    p.add_argument("--python", help="serve the app with this interpreter (e.g. a venv with the CPU-only torch "
                                    "wheel); it needs the app's requirements, not playwright")
    args = p.parse_args(argv)
    if args.python and not Path(args.python).is_file():
        p.error(f"no interpreter at {args.python}")
    print(f"demo peak RSS: {demo_peak_rss_mb(args.quick, args.python):.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
