"""Helpers to serve the app on 127.0.0.1 for the browser tests, the load test and the demo benchmark."""

from __future__ import annotations

import os
import socket
import time
import urllib.request

CHROMIUM = os.environ.get("LOGITSCOPE_CHROMIUM", "/usr/bin/chromium")
# URL path of each st.Page in app.py ("" is the default page), and the text that shows it rendered.
PAGES = {"": "Logitscope", "distributions": "Logit distributions", "differences": "Confidence differences",
         "lab": "Distillation lab", "embedding": "Embedding of the logit vectors",
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
