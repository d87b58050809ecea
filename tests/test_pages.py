"""Every page of the app, driven through Streamlit's AppTest against a trained study cache.

AppTest runs the real scripts in this process, background jobs included; it cannot see charts
(tests/test_app_charts.py covers those as functions). Each test gets a private copy of the study cache,
so lab runs and UMAP maps written here never leak into other tests.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from apptest import no_exception, open_page, texts
from streamlit.testing.v1 import AppTest

from core.app import jobs
from core.app.palette import display_name

PAGES = ["overview", "distributions", "differences", "lab", "embedding", "across", "why"]


@pytest.fixture(autouse=True)
def no_jobs_left():
    jobs.clear()
    yield
    jobs.clear()  # cancels whatever a test started, so no thread outlives it


def wait_for_jobs(at: AppTest, seconds: float = 150) -> AppTest:
    """Let background jobs finish, then rerun the page (AppTest has no timer-driven reruns)."""
    deadline = time.time() + seconds
    for job in jobs.active():
        assert job.wait(max(1.0, deadline - time.time())), f"{job.label} did not finish in {seconds} s"
    return at.run()


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders(app_cache, page):
    at = wait_for_jobs(open_page(page))  # the embedding page computes its UMAP map in the background
    no_exception(at)
    assert "Waiting for" not in texts(at)
    if page == "why":  # self-contained: none of the shared settings in its sidebar
        assert not at.sidebar.multiselect and not at.sidebar.select_slider
    else:
        assert at.sidebar.multiselect(key="w.m").value == ["standard", "pgd-at"]


_FIRST_PAGE = """
import sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=120).run()
assert not at.exception, [e.message for e in at.exception]
assert at.markdown or at.dataframe, "the overview rendered nothing"
print(sorted({m.split('.')[0] for m in sys.modules} & {"scipy", "sklearn", "umap", "torchvision"}))
"""


def test_the_first_page_imports_no_heavy_library_it_does_not_need(app_cache):
    """The warm start's budget: scipy, scikit-learn, UMAP and torchvision load only on the pages that use them."""
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", _FIRST_PAGE, str(root / "app.py")], cwd=root, check=True,
                         capture_output=True, text=True, timeout=300).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_streamlit_run_in_the_project_folder_does_not_watch_files():
    """.streamlit/config.toml: the file watcher made first-run training in the app 2-5x slower."""
    root = Path(__file__).resolve().parent.parent
    code = ("from streamlit import config; config.get_config_options(force_reparse=True); "
            "print(config.get_option('server.fileWatcherType'), config.get_option('browser.gatherUsageStats'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, check=True, capture_output=True, text=True).stdout
    assert out.split() == ["none", "False"]


def test_moving_epsilon_changes_the_statistics(app_cache):
    at = open_page("distributions")
    before = at.dataframe[0].value.copy()
    assert list(before["model"]) == ["Standard", "PGD-AT"]
    at.select_slider(key="w.eps.main").set_value(0.2).run()
    no_exception(at)
    after = at.dataframe[0].value
    assert not before[["mean", "median"]].equals(after[["mean", "median"]])
    assert after.set_index("model").loc["PGD-AT", "mean"] < after.set_index("model").loc["Standard", "mean"]
    assert at.query_params["eps"] in ("0.2", ["0.2"])


def test_one_epsilon_per_session_shown_where_it_is_used(app_cache):
    """The distributions page's scrubber is the session's epsilon: the sidebar names it instead of showing a
    second slider, the link follows it, and the other pages open at it (and write it back)."""
    at = open_page("distributions", {"eps": "0.15"})
    no_exception(at)
    assert not [s for s in at.sidebar.select_slider if s.key == "w.eps"]  # one epsilon on the screen
    assert "Epsilon: set on this page" in "\n".join(c.value for c in at.sidebar.caption)
    assert at.select_slider(key="w.eps.main").value == 0.15
    at.select_slider(key="w.eps.main").set_value(0.3).run()
    assert at.query_params["eps"] in ("0.3", ["0.3"])
    at.switch_page("pages/differences.py").run()
    no_exception(at)
    assert at.sidebar.select_slider(key="w.eps").value == 0.3
    at.sidebar.select_slider(key="w.eps").set_value(0.05).run()
    at.switch_page("pages/distributions.py").run()
    assert at.select_slider(key="w.eps.main").value == 0.05 and at.query_params["eps"] in ("0.05", ["0.05"])


def test_quantity_and_split_change_the_table(app_cache):
    at = open_page("distributions")
    at.selectbox(key="w.q").set_value("entropy").run()
    at.radio(key="w.split").set_value("correct").run()
    no_exception(at)
    table = at.dataframe[0].value
    assert set(table["group"]) == {"correct", "incorrect"} and set(table["model"]) == {"Standard", "PGD-AT"}
    at.selectbox(key="w.q").set_value("logits").run()
    no_exception(at)
    assert at.dataframe[0].value["n"].max() > 360  # every logit of every sample


def test_a_link_opens_the_same_view_and_bad_values_fall_back(app_cache):
    at = open_page("distributions", {"eps": "0.15", "m": "trades,pgd-at", "q": "logit_gap", "split": "class"})
    no_exception(at)
    assert at.select_slider(key="w.eps.main").value == 0.15
    assert at.sidebar.multiselect(key="w.m").value == ["trades", "pgd-at"]
    assert (at.selectbox(key="w.q").value, at.radio(key="w.split").value) == ("logit_gap", "class")
    bad = open_page("distributions", {"eps": "7", "m": "nobody", "steps": "-3", "norm": "l9", "q": "x",
                                      "split": "%00", "ds": "nope"})
    no_exception(bad)
    assert bad.select_slider(key="w.eps.main").value == 0.1
    assert bad.sidebar.multiselect(key="w.m").value == ["standard", "pgd-at"]
    assert bad.sidebar.number_input(key="w.steps").value == 20
    assert "Ignored link settings" in texts(bad)


def test_settings_survive_a_page_change(app_cache):
    at = open_page("distributions")
    at.sidebar.multiselect(key="w.m").set_value(["standard", "trades"]).run()
    at.select_slider(key="w.eps.main").set_value(0.05).run()
    at.switch_page("pages/differences.py").run()
    no_exception(at)
    assert at.sidebar.multiselect(key="w.m").value == ["standard", "trades"]
    assert at.sidebar.select_slider(key="w.eps").value == 0.05
    assert at.selectbox(key="w.b").value == "trades"


def test_differences_inspect_selects_a_sample(app_cache):
    at = open_page("differences")
    no_exception(at)
    labels = [m.label for m in at.metric]
    assert "Spearman correlation" in labels and "Kendall correlation" in labels
    spearman = float(at.metric[0].value)
    assert -1 <= spearman < 1
    at.button(key="inspect.b.3").click().run()
    no_exception(at)
    chosen = at.number_input(key="w.i").value
    at.button(key="inspect.a.0").click().run()
    assert at.number_input(key="w.i").value != chosen
    at.radio(key="w.color").set_value("outcome").run()
    at.radio(key="w.on").set_value("attacked").run()  # the page opens on clean images; attacked at the sidebar's eps
    no_exception(at)
    assert float(at.metric[0].value) != spearman


def test_pages_ask_for_models_when_too_few_are_selected(app_cache):
    at = open_page("differences", {"m": "pgd-at"})
    no_exception(at)
    assert "at least two models" in texts(at)
    at.sidebar.multiselect(key="w.m").set_value([]).run()  # clearing the picker is kept, not reset
    at.switch_page("pages/distributions.py").run()
    no_exception(at)
    assert at.sidebar.multiselect(key="w.m").value == [] and "Pick a model" in texts(at)


def test_a_tiny_distillation_run_appears_in_the_comparison_table(app_cache):
    at = open_page("lab")
    at.selectbox(key="w.manip").set_value("flatten_nonmax").run()
    at.slider(key="w.epochs").set_value(1).run()
    at.number_input(key="w.seed").set_value(7).run()
    assert "Not run yet" in texts(at)
    at.button(key="distill").click().run()
    no_exception(at)
    at = wait_for_jobs(at)
    no_exception(at)
    name = "lab:pgd-at:flatten_nonmax epochs=1 seed=7"
    table = at.dataframe[-1].value
    assert name in list(table["name"]), table
    assert "Clean accuracy" in [m.label for m in at.metric]
    # the run is in the cache: a new session (a restart) still lists it, and it can be compared
    again = open_page("lab")
    assert name in list(again.dataframe[-1].value["name"])
    assert display_name(name) in again.sidebar.multiselect(key="w.m").options


def test_lab_reports_a_bad_setting_as_a_message(app_cache):
    at = open_page("lab", {"T": "0"})  # out of range in a link: falls back to the default temperature
    no_exception(at)
    assert at.slider(key="w.T").value == 4.0


def test_why_page_trains_live_as_epsilon_moves(app_cache):
    at = open_page("why")
    first = [m.value for m in at.metric]
    at.slider(key="w.teps").set_value(1.0).run()
    no_exception(at)
    assert [m.value for m in at.metric] != first
    assert float(at.metric[0].value) < float(first[0])  # a larger epsilon shrinks the AT model's max logit


def test_a_new_attack_setting_waits_for_its_logits(app_cache):
    at = open_page("distributions")
    at.sidebar.number_input(key="w.steps").set_value(3).run()
    no_exception(at)
    assert "Waiting for:" in texts(at) and "attacking standard" in texts(at)
    at = wait_for_jobs(at)
    no_exception(at)
    assert "Waiting for" not in texts(at) and len(at.dataframe) == 1


@pytest.mark.parametrize("page", PAGES)
def test_empty_cache_opens_and_says_what_it_waits_for(page):
    at = open_page(page)  # the isolated_cache fixture gives this test an empty cache
    no_exception(at)
    preparing = any(j.label.startswith("Preparing the default digits models") for j in jobs.active())
    assert preparing == (page != "why")  # the self-contained page trains its own toy models only
    if page in ("distributions", "differences", "embedding"):
        assert "Waiting for:" in texts(at) and "training standard" in texts(at)
    if page == "overview":
        assert "not trained" in set(at.dataframe[0].value["status"])
