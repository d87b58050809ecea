"""The self-contained "Why AT shrinks logits" page through AppTest: its own sidebar, text that follows the
sliders, metric labels short enough to read, and a warning when the AT model collapses."""

from __future__ import annotations

import pytest
from apptest import no_exception, open_page, texts

from core.app import jobs

LABEL_CHARS = 16  # about what a metric label shows whole in one of five columns at 1400 px, beside the sidebar



@pytest.fixture(autouse=True)
def no_jobs_left():
    """The page trains its toy models on the spot and needs no trained study: each test has an empty cache,
    and nothing the page may start outlives the test."""
    jobs.clear()
    yield
    jobs.clear()


def test_the_sidebar_holds_no_shared_settings_and_says_why():
    at = open_page("why")
    no_exception(at)
    assert not at.sidebar.multiselect and not at.sidebar.select_slider and not at.sidebar.selectbox
    sidebar = " ".join(c.value for c in at.sidebar.caption)
    assert "self-contained" in sidebar
    assert "ignores the sidebar" not in texts(at)
    assert [s.label for s in at.main.get("slider")] == ["Training epsilon", "Class separation", "Noise", "Classes"]


def test_the_text_follows_the_number_of_classes():
    at = open_page("why")
    assert "**3 Gaussian blobs**" in texts(at)
    at.slider(key="w.classes").set_value(5).run()
    no_exception(at)
    words = texts(at)
    assert "**5 Gaussian blobs**" in words and "three" not in words and "3 Gaussian" not in words


def test_metric_labels_are_short_and_the_epsilon_is_in_the_help():
    at = open_page("why", {"teps": "0.35"})
    no_exception(at)
    labels = [m.label for m in at.metric]
    assert len(labels) == 5 and all(len(label) <= LABEL_CHARS for label in labels), labels
    robust = next(m for m in at.metric if m.label.startswith("Robust"))
    assert "0.35" in robust.proto.help and "Standard model" in robust.proto.help


def test_a_collapsed_at_model_is_explained():
    at = open_page("why")
    assert not at.warning  # the defaults train a healthy AT model
    at = open_page("why", {"teps": "1", "sep": "1"})
    no_exception(at)
    assert len(at.warning) == 1
    words = at.warning[0].body
    assert "collapsed" in words and "chance is 1/3" in words and "Lower the training epsilon" in words
