"""The Streamlit internals the pages rely on (pages/_internals.py): present in the pinned Streamlit, and
degrading to one logged warning, never an error, when a Streamlit upgrade moves them."""

from __future__ import annotations

import logging

import pytest
import streamlit as st

from pages import _internals as internals


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(internals, "_warned", set())
    from streamlit.runtime.pages_manager import PagesManager

    monkeypatch.setattr(PagesManager, "uses_pages_directory", PagesManager.uses_pages_directory)


def test_the_pinned_streamlit_has_every_internal_the_pages_use():
    missing = [name for name, ok in internals.present().items() if not ok]
    assert not missing, (f"Streamlit no longer has {missing}: update pages/_internals.py (direct links after a "
                         "server start would open in the legacy pages/ layout)")


def test_use_navigation_clears_the_legacy_flag_outside_a_legacy_run():
    from streamlit.runtime.pages_manager import PagesManager

    PagesManager.uses_pages_directory = True
    internals.use_navigation()  # not called from Streamlit's legacy runner: no rerun
    assert PagesManager.uses_pages_directory is False


@pytest.mark.parametrize("moved", ["PAGES_MANAGER", "LEGACY_RUNNER"])
def test_a_moved_internal_is_one_logged_warning_not_an_error(monkeypatch, caplog, moved):
    gone = {"PAGES_MANAGER": ("streamlit.runtime.pages_manager", "PagesManager", "renamed_flag"),
            "LEGACY_RUNNER": ("streamlit.runtime.scriptrunner.script_runner", "_renamed_runner")}[moved]
    monkeypatch.setattr(internals, moved, gone)
    st.session_state.pop("_navigation_fixed", None)
    with caplog.at_level(logging.WARNING, logger=internals.__name__):
        internals.use_navigation()
        internals.use_navigation()
    warnings = [r for r in caplog.records if r.name == internals.__name__]
    assert len(warnings) == 1 and gone[-1] in warnings[0].getMessage()
    assert internals.present()[gone[-1] if moved == "LEGACY_RUNNER" else "PagesManager.renamed_flag"] is False


def test_scroll_into_view_sends_a_fresh_script_each_time_and_degrades_to_one_warning(monkeypatch, caplog):
    sent = []
    monkeypatch.setattr(st, "html", lambda body, unsafe_allow_javascript=False: sent.append(
        (body, unsafe_allow_javascript)))
    assert internals.scroll_into_view("selected-sample") and internals.scroll_into_view("selected-sample")
    assert all(js and '"selected-sample"' in body and "scrollIntoView" in body for body, js in sent)
    assert sent[0][0] != sent[1][0]  # a browser reruns a script only when it changed
    with pytest.raises(ValueError):
        internals.scroll_into_view('x"); alert(1); ("')  # an id, never code

    def old_html(body, **kwargs):
        if kwargs:
            raise TypeError("html() got an unexpected keyword argument 'unsafe_allow_javascript'")

    monkeypatch.setattr(st, "html", old_html)
    with caplog.at_level(logging.WARNING, logger=internals.__name__):
        assert internals.scroll_into_view("selected-sample") is False
        assert internals.scroll_into_view("selected-sample") is False
    assert len([r for r in caplog.records if r.name == internals.__name__]) == 1
