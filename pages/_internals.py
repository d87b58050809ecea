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
"""

from __future__ import annotations

import importlib
import logging
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
