"""Helpers to serve the app on 127.0.0.1 for the browser tests, the load test and the demo benchmark."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent

CHROMIUM = os.environ.get("LOGITSCOPE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# URL path of each st.Page in app.py ("" is the default page), and the text that shows it rendered.
PAGES = {"": "Logitscope", "distributions": "Logit distributions", "differences": "Confidence differences",
         "lab": "Distillation lab", "embedding": "Embedding of the logit vectors", "across": "Across models",
         "why": "Why adversarial training shrinks logits"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float) -> None:
    """Return once `url` answers 200; raise TimeoutError after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@contextlib.contextmanager
def serve_app(env: dict, log_path: Path, python: str | None = None,
              start_timeout: float = 90, script: str = "app.py") -> Iterator[tuple[str, subprocess.Popen]]:
    """`streamlit run app.py` on a free port of 127.0.0.1 with `env`, its output in `log_path`.

    Yields (base URL, process) once the server answers its health check; stops it afterwards.
    `python`: the interpreter that serves it (default: this one); `script`: the entry point, from the
    project's folder (demo/streamlit_app.py serves the hosted demo as Community Cloud runs it).
    """
    port = free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [python or sys.executable, "-m", "streamlit", "run", script, "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_http(f"http://127.0.0.1:{port}/_stcore/health", start_timeout)
            yield f"http://127.0.0.1:{port}", proc
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def launch_chromium(playwright):
    """Headless Debian Chromium through a `sync_playwright()` handle (never a downloaded browser)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def settle(page, title: str, timeout: float) -> None:
    """Wait until the page shows its title, no longer says it is waiting, and its script has stopped for 1.5 s."""
    page.get_by_text(title, exact=False).first.wait_for(timeout=timeout * 1000)
    deadline, quiet_since = time.time() + timeout, None
    while time.time() < deadline:
        busy = page.locator('[data-testid="stStatusWidget"]').count() > 0 or \
            page.get_by_text("Waiting for:", exact=False).count() > 0
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since > 1.5:
            return
        time.sleep(0.25)
