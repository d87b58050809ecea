"""Links: what the app writes reads back the same, and whatever it does not use is listed in the sidebar.

The parsers of pages/_state.py are tested directly (the CIFAR-10 grid needs no data); whole pages
through Streamlit's AppTest on the trained digits study. Also: a failing job started from the
overview says so there, and a refused demo bundle tells a visitor nothing about the server.
"""

from __future__ import annotations

import re

import pytest
from apptest import no_exception, open_page
from streamlit.testing.v1 import AppTest

from core.app import jobs
from core.errors import LogitscopeError
from core.study.hyper import HYPER, OWN_DATA_HYPER, eps_grid, hyper
from pages import _state as state

GRIDS = [*HYPER, "own data", "digits l2"]


def grid_of(name: str) -> tuple[float, ...]:
    if name == "own data":
        return OWN_DATA_HYPER.eps_grid
    return eps_grid("digits", "l2") if name == "digits l2" else hyper(name).eps_grid


@pytest.fixture(autouse=True)
def no_jobs_left():
    jobs.clear()
    yield
    jobs.clear()


def ignored_note(at: AppTest) -> str:
    """The sidebar's list of ignored link settings, as shown (markdown escapes removed), or ''."""
    notes = [c.value for c in at.sidebar.caption if c.value.startswith("Ignored link settings")]
    assert len(notes) <= 1, notes
    return re.sub(r"\\(.)", r"\1", notes[0]) if notes else ""


# --- epsilon round-trips exactly --------------------------------------------------------------------

@pytest.mark.parametrize("name", GRIDS)
def test_every_grid_epsilon_written_in_a_link_reads_back_as_itself(name):
    grid = grid_of(name)
    parse = state.on_grid(grid)
    for g in grid:
        assert parse(state.encode(g)) == g, (state.encode(g), g)  # cifar10: 8/255 is written 0.0313725
        assert parse(repr(g)) == g


def test_cifar10s_epsilons_read_back_from_the_apps_own_links():
    grid = hyper("cifar10").eps_grid
    assert state.on_grid(grid)("0.0313725") == 8 / 255 and state.on_grid(grid)("0.00784314") == 2 / 255


@pytest.mark.parametrize("name", GRIDS)
def test_an_epsilon_nearer_than_half_a_grid_step_is_that_point_and_one_between_points_is_refused(name):
    grid = sorted(grid_of(name))
    parse = state.on_grid(grid)
    half = min(b - a for a, b in zip(grid, grid[1:])) / 2
    for a, b in zip(grid, grid[1:]):
        assert parse(repr(a + 0.9 * half)) == a and parse(repr(b - 0.9 * half)) == b
        if b - a > 2.2 * half:  # a wider step: what lies over half the smallest step from both is refused
            assert parse(repr(a + 1.1 * half)) is None and parse(repr(b - 1.1 * half)) is None
    assert parse(repr(grid[-1] + 1.1 * half)) is None and parse(repr(-1.1 * half)) is None
    assert parse("nan") is None and parse("inf") is None and parse("8/255") is None


def test_the_sidebars_epsilon_survives_a_link_written_by_the_app(app_cache):
    at = open_page("differences")
    at.sidebar.select_slider(key="w.eps").set_value(0.15).run()
    link = dict(at.query_params)
    again = open_page("differences", {k: v[-1] if isinstance(v, list) else v for k, v in link.items()})
    no_exception(again)
    assert again.sidebar.select_slider(key="w.eps").value == 0.15 and ignored_note(again) == ""
    near = open_page("overview", {"eps": "0.1500004"})  # written with more digits (or by hand)
    assert near.sidebar.select_slider(key="w.eps").value == 0.15 and ignored_note(near) == ""
    between = open_page("overview", {"eps": "0.25"})  # half-way between two grid points: a guess, refused
    assert between.sidebar.select_slider(key="w.eps").value == 0.1 and "eps=0.25" in ignored_note(between)


# --- every ignored setting is listed -----------------------------------------------------------------

LAB_BAD = {"teacher": "nobody", "manip": "rot13", "T": "inf", "hard": "2", "frac": "-0.5", "epochs": "0x10",
           "seed": "-1"}
WHY_BAD = {"teps": "9", "sep": "x", "noise": "nan", "classes": "7"}


@pytest.mark.parametrize("page, bad", [("lab", LAB_BAD), ("why", {**WHY_BAD, "zzz": "1", "m": "standard,nobody"})],
                         ids=["lab", "why"])
def test_a_pages_own_bad_link_settings_are_listed_on_its_first_run(app_cache, page, bad):
    at = open_page(page, bad)
    no_exception(at)
    note = ignored_note(at)
    for k, v in bad.items():
        if not (page == "why" and k == "m"):
            assert f"{k}={v if k != 'm' else 'nobody'}" in note, (k, note)
    assert "more" not in note and "standard" not in note
    if page == "why":  # self-contained: the shared settings wait, unread, in the link for the other pages
        assert "nobody" not in note and at.query_params["m"] == "standard,nobody"
        assert at.slider(key="w.teps").value == 0.5 and at.slider(key="w.classes").value == 3
    else:
        assert at.slider(key="w.T").value == 4.0 and at.number_input(key="w.seed").value == 0


def test_unknown_link_keys_and_list_items_are_listed_but_the_apps_own_page_changes_are_not(app_cache):
    at = open_page("distributions", {"q": "entropy", "zzz": "1", "m": "standard,nobody,pgd-at"})
    no_exception(at)
    assert ignored_note(at) == "Ignored link settings: zzz=1, m=nobody"
    assert at.sidebar.multiselect(key="w.m").value == ["standard", "pgd-at"]
    at.switch_page("pages/overview.py").run()  # drops the distribution page's q= from the URL: not a bad link
    no_exception(at)
    assert ignored_note(at) == "Ignored link settings: zzz=1, m=nobody"


def test_the_list_of_ignored_settings_is_cut_short_and_shown_as_typed():
    items = {"eps": "x" * 10_000, **{f"k{i}": str(i) for i in range(9)}, "y" * 500: "[click](http://evil)"}
    line = state.ignored_line(items)
    plain = re.sub(r"\\(.)", r"\1", line)
    assert len(plain) < 300 and "x" * 39 + "\u2026" in plain and "x" * 41 not in plain
    assert plain.endswith(f" and {len(items) - state.SHOWN_ITEMS} more")
    link = state.ignored_line({"a": "[click](http://evil) **b** <i>"})
    assert "\\[click\\]\\(http\\:" in link and "\\*\\*b\\*\\*" in link  # markdown shows it as typed


def test_a_huge_link_value_is_listed_cut_short(app_cache):
    at = open_page("overview", {"eps": "9" * 10_000, "m": ",".join(f"model{i}" for i in range(2_000))})
    no_exception(at)
    note = ignored_note(at)
    assert "eps=" + "9" * 39 + "\u2026" in note and "m=model0,model1," in note and len(note) < 150, note[:300]


# --- a failing job started from the overview shows there --------------------------------------------

def test_a_failing_job_started_from_the_overview_shows_its_error_there(app_cache, monkeypatch):
    from core.app import prepare

    def failing(ctx, *args, **kwargs):
        ctx.report("attacking", 0.1)
        raise LogitscopeError("The disk is full: free some space.")

    monkeypatch.setattr(prepare, "prepare", failing)
    at = open_page("overview", {"steps": "3"})  # no logits for PGD-3: the overview offers to compute them
    at.button(key="compute_missing").click().run()
    for job in jobs.active():
        assert job.wait(30)
    at.run()
    no_exception(at)
    assert "The disk is full: free some space." in [e.value for e in at.error]


# --- a refused demo bundle ---------------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"not a zip at all", None], ids=["not-a-bundle", "missing"])
def test_a_refused_demo_bundle_tells_a_visitor_its_name_and_nothing_about_the_server(tmp_path, monkeypatch, content):
    from core.app import demo as core_demo

    bad = tmp_path / "secret-folder" / "demo-bundle.zip"
    if content is not None:
        bad.parent.mkdir()
        bad.write_bytes(content)
    monkeypatch.setenv(core_demo.ENV, str(bad))
    monkeypatch.setattr(core_demo, "_started", {})
    at = open_page("overview")
    no_exception(at)
    shown = "\n".join(e.value for e in at.error)
    assert "The hosted demo cannot start" in shown and "demo-bundle.zip" in shown
    assert ("no such file" if content is None else "not a usable Logitscope bundle") in shown
    for leak in ("secret-folder", str(tmp_path), "python -m", "core", "LOGITSCOPE_DEMO", ".py"):
        assert leak not in shown, (leak, shown)
