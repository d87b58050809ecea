"""The sidebar and what it chose (`Ctx`), the one epsilon control, and the page guards.

Every page starts with `ctx = sidebar(...)` inside `guard()`: the sidebar is rendered, the first-run
training is started when needed, and an error a user can fix stops the page with its message.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import streamlit as st

from core.app import lab, overview, palette, prepare, views
from core.config import cache_dir, demo_mode
from core.engine.data import DATASETS
from core.errors import LogitscopeError
from core.study.hyper import HYPER, eps_grid, hyper
from core.study.recipes import Recipe
from pages import _data as data
from pages import _internals as internals
from pages import _state as state
from pages import _waiting as waiting

SIDEBAR_PARAMS = ("ds", "m", "norm", "steps", "eps", "seeds", "dd")


@contextmanager
def guard() -> Iterator[None]:
    """Show an error a user can fix as a message that says what to do, never as a traceback."""
    try:
        yield
    except LogitscopeError as exc:
        st.error(shown_error(str(exc)), icon=":material/error:")
        st.stop()


def shown_error(message: str) -> str:
    """A message as a visitor reads it: in the hosted demo, the server's cache folder is not named."""
    if demo_mode():
        message = message.replace(str(cache_dir()), "the demo's cache")
    return message


@dataclass(frozen=True)
class Ctx:
    """The sidebar's choices: the selection, the current epsilon, and every model on offer."""

    sel: views.Selection
    eps: float
    catalog: dict[str, Recipe]
    lab_names: tuple[str, ...]
    demo: object | None = None  # the core.app.demo.Demo being served, or None
    seeds: int = 1              # the findings use the default study of seeds 0..seeds-1
    colors: dict[str, str] = field(default_factory=dict)  # one colour per model of the catalog (core.app.palette)

    def recipes(self, names: Sequence[str] | None = None) -> dict[str, Recipe]:
        return {n: self.catalog[n] for n in (self.sel.models if names is None else names)}


def datasets() -> list[str]:
    names = [d for d in DATASETS if d in HYPER]
    return sorted(names, key=lambda d: (d != "digits", d)) + data.own_names()


def _dataset_parser(options: Sequence[str], data_dir: str | None):
    """One of the options, or own data ("npz:...", "folder:...") that opens (in its canonical form)."""
    known, own = state.choice(options), data.own_parser(data_dir)

    def parse(text: str):
        v = known(text)
        if v is None and (v := own(text)) is not None and v not in data.own_names():
            data.own_names().append(v)
        return v
    return parse


def _ready(catalog: dict[str, Recipe], ds: str, norm: str, steps: int) -> dict[str, Recipe]:
    """The demo's models: those whose logits the bundle holds (nothing else can be computed there)."""
    sel = views.Selection(ds, norm=norm, steps=steps)
    return {n: r for n, r in catalog.items() if not prepare.missing([r], sel.data(), sel.attack(), sel.grid())}


def sidebar(page_params: Sequence[str] = (), eps_on_page: bool = False) -> Ctx:
    """Render the shared sidebar and return what it chose; starts the first-run training if needed.

    `eps_on_page`: the page has its own epsilon control (`eps_scrubber`), the one shown on that page: the
    sidebar then names it instead of offering a second slider (both would write the session's one epsilon,
    but a sidebar outside the page's fragment could not follow a scrub or Play).
    """
    demo = data.demo()  # first: in the demo it points the cache at the bundle
    internals.use_navigation()
    state.show_ignored(None)  # until this run's slot exists below
    state.keep_only((*SIDEBAR_PARAMS, *page_params))
    with guard(), st.sidebar:
        st.subheader("What to compare")
        ds_box = st.container()
        data_dir = data.source_settings(demo)
        options = [demo.dataset] if demo else datasets()
        parse = state.choice(options) if demo else _dataset_parser(options, data_dir)
        state.value("ds", options[0], parse)  # own data from a link joins the options here
        options = [demo.dataset] if demo else datasets()
        with ds_box:
            ds = st.selectbox("Dataset", options, **state.bind("ds", options[0], parse),
                              help="The dataset whose models and test images every page shows. Add your own "
                                   "data below.", disabled=demo is not None)
        runs = lab.run_recipes(ds, owner=data.visitor())
        catalog = views.catalog(ds, extra=runs)
        if demo:
            catalog = _ready(catalog, ds, demo.norm, demo.steps)
        names = list(catalog)
        default = [n for n in ("standard", "pgd-at") if n in names] or names[:2]
        models = st.multiselect("Models", names, **state.bind("m", default, state.several(names)),
                                format_func=palette.display_name,
                                help="Two or more models to compare. Lab runs appear here once trained.")
        st.caption("Attack used to evaluate (PGD)" + (": fixed by the demo's bundle" if demo else ""))
        c1, c2 = st.columns(2)
        norms = [demo.norm] if demo else ["linf", "l2"]
        norm = c1.radio("Norm", ["linf", "l2"], horizontal=True, **state.bind("norm", norms[0], state.choice(norms)),
                        format_func=lambda n: {"linf": "Linf", "l2": "L2"}[n], disabled=demo is not None)
        lo, hi = (demo.steps, demo.steps) if demo else (1, 200)
        steps = c2.number_input("Steps", 1, 200, step=1, disabled=demo is not None, **state.bind(
            "steps", demo.steps if demo else hyper(ds).eval_steps, state.number(lo, hi, integer=True)),
            help="PGD iterations; more is a stronger attack and a longer first computation.")
        grid = eps_grid(ds, norm, data_dir)
        if eps_on_page:
            eps = state.value("eps", grid[min(2, len(grid) - 1)], state.on_grid(grid))
            st.caption("Epsilon: set on this page, by the slider above the charts. The other pages use the "
                       "same epsilon.")
        else:
            eps = st.select_slider("Epsilon", grid, **state.bind("eps", grid[min(2, len(grid) - 1)],
                                                                  state.on_grid(grid)),
                                   format_func=lambda e: f"{e:g}",
                                   help="Attack budget in pixel units (0 = clean images). Every page reads "
                                        "its logits from the cache at this epsilon.")
        most = 1 if demo else overview.SEEDS_MAX  # a bundle holds one seed
        seeds = st.number_input("Seeds for the findings", 1, overview.SEEDS_MAX, step=1, disabled=demo is not None,
                                **state.bind("seeds", 1, state.number(1, most, integer=True)),
                                help="The overview's findings use the default study trained with seeds 0 to N-1 "
                                     "(intervals over seeds and test images). Seeds beyond the first train when "
                                     "you ask on the overview page; the model pickers show seed 0's models.")
        state.show_ignored(st.empty())  # the page adds its own bad settings here as it binds its widgets
        sel = views.Selection(ds, tuple(models), norm, int(steps), data_dir=data_dir)
        ctx = Ctx(sel, float(eps), catalog, tuple(r.name for r in runs), demo, int(seeds), palette.assign(list(catalog)))
        if demo is None:
            waiting.bootstrap(sel, [catalog[n] for n in sel.models])
        waiting.sidebar_jobs()
    return ctx


def page_only(page_params: Sequence[str] = ()) -> None:
    """The sidebar of a self-contained page: navigation and background work, none of the shared settings.

    The shared settings stay in the session (and come back on the next page); the sidebar says why
    they are not shown.
    """
    data.demo()
    internals.use_navigation()
    state.show_ignored(None)
    state.keep_only((*SIDEBAR_PARAMS, *page_params))
    with st.sidebar:
        st.caption("This page is self-contained: the models, attack and epsilon chosen on the other pages do not "
                   "apply here, so their settings are hidden. They come back as you were on the other pages.")
        state.show_ignored(st.empty())
        waiting.sidebar_jobs()


def note_twins(ctx: Ctx, names: Sequence[str] | None = None) -> None:
    """A caption naming the models shown together that are the same model (identical clean logits)."""
    note = overview.twins_note(overview.twins(ctx.recipes(names), ctx.sel.data()), palette.display_name)
    if note:
        st.caption(note)


def require(ctx: Ctx, names: Sequence[str] | None = None) -> None:
    """Stop the page with a clear waiting message until these models' logits are in the cache."""
    waiting.require(ctx.sel, list(ctx.recipes(names).values()))


def need_models(ctx: Ctx, n: int = 1) -> None:
    """Stop the page with a hint unless the sidebar selects at least n models."""
    if len(ctx.sel.models) < n:
        what = "a model" if n == 1 else f"at least {'two' if n == 2 else n} models"
        st.info(f"Pick {what} in the sidebar to compare.", icon=":material/compare_arrows:")
        st.stop()



# --- the epsilon scrubber -------------------------------------------------------------------------

def eps_scrubber(ctx: Ctx, render: Callable[[float], None]) -> None:
    """A slider over the cached grid plus a play toggle, around `render(eps)` (the charts it drives).

    The slider and the charts form one fragment: scrubbing or playing reruns only them, from cached
    logits. While playing, the fragment reruns every second and steps epsilon through the grid. The
    slider is the session's one epsilon (the page's sidebar is `sidebar(eps_on_page=True)`), kept in the
    URL as `eps` like the sidebar's, so the other pages and a shared link open at the scrubbed value.
    """
    grid = ctx.sel.grid()
    playing = bool(st.session_state.get("w.play"))
    st.session_state["_player_fresh"] = True

    def body() -> None:
        # Step only on the timer's runs: not on the page's own run, nor on a click of Play or the slider.
        if playing and st.session_state.get("w.play") and not st.session_state.get("_player_fresh"):
            cur = state.store().get("eps", grid[0])
            state.set_value("eps", grid[(grid.index(cur) + 1) % len(grid)] if cur in grid else grid[0])
        st.session_state["_player_fresh"] = False
        c1, c2 = st.columns([6, 1], vertical_alignment="bottom")
        bound = state.bind("eps", ctx.eps, state.on_grid(grid), key="w.eps.main")
        eps = c1.select_slider("Epsilon (scrub or play)", grid, format_func=lambda e: f"{e:g}",
                               key=bound["key"], on_change=_scrubbed, args=bound["args"],
                               help="The session's epsilon: the other pages use it too. Charts redraw from "
                                    "cached logits.")
        if c2.toggle("Play", key="w.play", help="Step through the epsilons, one per second.") != playing:
            st.rerun()  # the whole page: the fragment is rebuilt with (or without) its timer
        render(float(eps))

    st.fragment(body, run_every=1.0 if playing else None)()


def _scrubbed(name: str, key: str) -> None:
    state.store()[name] = st.session_state[key]
    st.session_state["_player_fresh"] = True  # a hand on the slider: do not step this run


# Streamlit collects all garbage after every script run (runner.postScriptGC), and every waiting page
# polls its job once a second: with torch, pandas and Streamlit loaded, each full collection walked
# ~300k long-lived objects for ~0.1 s while holding the GIL, so a few waiting sessions starved the
# very job they waited for. Freezing what exists once the app's modules are imported takes those
# objects out of every later collection (a full collection then takes milliseconds).
gc.freeze()
