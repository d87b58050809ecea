"""The one module that touches Streamlit's private internals, each use guarded.

Why they are needed: Streamlit treats a `pages/` folder as its legacy multipage layout until
app.py calls `st.navigation`, so a link straight to a page, first thing after a server start, runs
that page without app.py (no navigation, no page config). `use_navigation` leaves that mode:
- it clears the private class flag `PagesManager.uses_pages_directory`, which sends every later run
  of every session through app.py;
- runs that already came the legacy way, in this session or in others started at the same moment,
  are found on the run's own call stack (Streamlit's legacy page runner is the function `_mpa_v1`)
  and rerun once. The shared flag cannot tell them: another session may have cleared it meanwhile.

If a Streamlit upgrade moves either, the pages keep working (a direct link after a start may then
show the legacy layout until the next click) and one warning is logged; `tests/test_pages_internals.py`
fails loudly when the pinned Streamlit no longer has them.

`scroll_into_view` is the one trick on the browser's side: a script that scrolls to an element id,
for a selection whose detail is out of sight. Without script support it does nothing and logs once.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import sys

import streamlit as st

log = logging.getLogger(__name__)

PAGES_MANAGER = ("streamlit.runtime.pages_manager", "PagesManager", "uses_pages_directory")
LEGACY_RUNNER = ("streamlit.runtime.scriptrunner.script_runner", "_mpa_v1")
_FIXED = "_navigation_fixed"
_warned: set[str] = set()


def _warn_once(what: str) -> None:
    if what not in _warned:
        _warned.add(what)
        log.warning("Streamlit no longer has %s: links straight to a page may open in the legacy pages/ "
                    "layout after a server start. Check pages/_internals.py against this Streamlit version.",
                    what)


def _pages_manager():
    """Streamlit's PagesManager class if it still has the flag we clear, else None."""
    module, cls, attr = PAGES_MANAGER
    try:
        manager = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        return None
    return manager if hasattr(manager, attr) else None


def present() -> dict[str, bool]:
    """Which of the internals this Streamlit has, by name (all True on the pinned version)."""
    module, name = LEGACY_RUNNER
    try:
        runner = callable(getattr(importlib.import_module(module), name, None))
    except ImportError:
        runner = False
    return {".".join(PAGES_MANAGER[1:]): _pages_manager() is not None, name: runner}


def use_navigation() -> None:
    """Leave Streamlit's legacy pages/ mode when this run came through it instead of app.py.

    A first run has no clicks to lose; AppTest, which resets the flag before every run, reruns only
    its first.
    """
    manager = _pages_manager()
    if manager is None:
        _warn_once(".".join(PAGES_MANAGER[1:]))
    else:
        manager.uses_pages_directory = False
    if st.session_state.get(_FIXED):
        return
    if not present()[LEGACY_RUNNER[1]]:
        _warn_once(".".join(LEGACY_RUNNER))
        return
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == LEGACY_RUNNER[1]:
            st.session_state[_FIXED] = True
            st.rerun()
        frame = frame.f_back


# --- bringing an element into view --------------------------------------------------------------

_SCROLLS = "_scrolls_sent"  # a counter: each script differs from the last, so the browser runs it again
_SCROLL_SCRIPT = """<script data-n="{n}">
(() => {{
  const go = () => document.getElementById({anchor})?.scrollIntoView({{behavior: "smooth", block: "start"}});
  [0, 300, 900].forEach((ms) => setTimeout(go, ms));  // again once the charts above have drawn
}})();
</script>"""


def scroll_into_view(anchor: str) -> bool:
    """Scroll the browser to the element with this id (a heading's `anchor=`); False if it cannot.

    A DOM trick, not a Streamlit API: a script in `st.html`, which runs it in the page itself. Call
    it only on the run that made the element worth seeing (a selection), never on every rerun; the
    script is sent at the end of that run, after the element. Without script support in `st.html`
    (another Streamlit version) the page works as before, without the scroll, and one warning is logged.
    """
    if not re.fullmatch(r"[A-Za-z][\w-]*", anchor):
        raise ValueError(f"not an element id: {anchor!r}")
    n = st.session_state.get(_SCROLLS, 0) + 1
    st.session_state[_SCROLLS] = n
    try:
        st.html(_SCROLL_SCRIPT.format(n=n, anchor=json.dumps(anchor)), unsafe_allow_javascript=True)
    except TypeError:  # st.html without unsafe_allow_javascript
        _warn_scroll_once()
        return False
    return True


def _warn_scroll_once() -> None:
    if "scroll" not in _warned:
        _warned.add("scroll")
        log.warning("st.html cannot run scripts in this Streamlit version: a selected sample is not scrolled "
                    "into view. Check pages/_internals.py against this Streamlit version.")
