"""What every page shares: the sidebar, waiting for background jobs, and the cached core calls.

This is the only module with `st.cache_*`. Cached functions take a string key that names what
they read (model keys, attack, grid, cache folder) plus the objects themselves as `_`-prefixed
arguments, which Streamlit does not hash.
"""

from __future__ import annotations

import gc
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import pandas as pd
import streamlit as st

from core import embedding as emb
from core import jobs, lab, overview, prepare, samples, toy, views
from core.config import cache_dir, stable_key
from core.data import DATASETS
from core.errors import LogitscopeError
from core.study import HYPER, Recipe, eps_grid, hyper, load_model
from pages import _data as data
from pages import _state as state
from pages import _waiting as waiting

SIDEBAR_PARAMS = ("ds", "m", "norm", "steps", "eps", "dd")


@contextmanager
def guard() -> Iterator[None]:
    """Show an error a user can fix as a message that says what to do, never as a traceback."""
    try:
        yield
    except LogitscopeError as exc:
        st.error(str(exc), icon=":material/error:")
        st.stop()


@dataclass(frozen=True)
class Ctx:
    """The sidebar's choices: the selection, the current epsilon, and every model on offer."""

    sel: views.Selection
    eps: float
    catalog: dict[str, Recipe]
    lab_names: tuple[str, ...]
    demo: object | None = None  # the core.demo.Demo being served, or None

    def recipes(self, names: Sequence[str] | None = None) -> dict[str, Recipe]:
        return {n: self.catalog[n] for n in (self.sel.models if names is None else names)}


def _use_navigation() -> None:
    """Leave Streamlit's legacy pages/ mode when this run came through it instead of app.py.

    Streamlit treats a `pages/` folder as the old multipage layout until app.py calls st.navigation,
    so a link straight to a page, first thing after a start, runs the page without app.py. Clearing
    the (private) class flag sends every later run of every session through app.py; the runs that
    already came the legacy way, in this session or in others started at the same moment, rerun once
    (a first run has no clicks to lose; AppTest, which resets the flag before every run, reruns only
    its first). Whether a run is legacy is read from the run's own call stack, not from the shared
    flag, which another session may have cleared in between.
    """
    from streamlit.runtime.pages_manager import PagesManager

    PagesManager.uses_pages_directory = False
    if st.session_state.get("_navigation_fixed"):
        return
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_mpa_v1":  # Streamlit's runner of the legacy layout
            st.session_state["_navigation_fixed"] = True
            st.rerun()
        frame = frame.f_back


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


def sidebar(page_params: Sequence[str] = ()) -> Ctx:
    """Render the shared sidebar and return what it chose; starts the first-run training if needed."""
    demo = data.demo()  # first: in the demo it points the cache at the bundle
    _use_navigation()
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
        runs = lab.run_recipes(ds)
        catalog = views.catalog(ds, extra=runs)
        if demo:
            catalog = _ready(catalog, ds, demo.norm, demo.steps)
        names = list(catalog)
        default = [n for n in ("standard", "pgd-at") if n in names] or names[:2]
        models = st.multiselect("Models", names, **state.bind("m", default, state.several(names)),
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
        eps = st.select_slider("Epsilon", grid, **state.bind("eps", grid[min(2, len(grid) - 1)],
                                                              state.on_grid(grid)),
                               format_func=lambda e: f"{e:g}",
                               help="Attack budget in pixel units (0 = clean images). Every page reads "
                                    "its logits from the cache at this epsilon.")
        if state.ignored():
            st.caption("Ignored link settings: " + ", ".join(f"{k}={v}" for k, v in state.ignored().items()))
        sel = views.Selection(ds, tuple(models), norm, int(steps), data_dir=data_dir)
        ctx = Ctx(sel, float(eps), catalog, tuple(r.name for r in runs), demo)
        if demo is None:
            waiting.bootstrap(sel, [catalog[n] for n in sel.models])
        waiting.sidebar_jobs()
    return ctx


show_job = waiting.show_job
start_prepare = waiting.start_prepare


def forget_job(job: jobs.Job) -> None:
    """Drop a finished job, so that the next request starts it afresh."""
    jobs.forget(job.key)


def require(ctx: Ctx, names: Sequence[str] | None = None) -> None:
    """Stop the page with a clear waiting message until these models' logits are in the cache."""
    waiting.require(ctx.sel, list(ctx.recipes(names).values()))


def need_models(ctx: Ctx, n: int = 1) -> None:
    """Stop the page with a hint unless the sidebar selects at least n models."""
    if len(ctx.sel.models) < n:
        what = "a model" if n == 1 else f"at least {'two' if n == 2 else n} models"
        st.info(f"Pick {what} in the sidebar to compare.", icon=":material/compare_arrows:")
        st.stop()


# --- cached core calls ----------------------------------------------------------------------------

def _logit_set_key(ctx: Ctx, names: Sequence[str]) -> str:
    sel = ctx.sel
    return stable_key({"models": [(n, ctx.catalog[n].key) for n in names], "ident": waiting.ident(sel)})


@st.cache_resource(show_spinner=False, max_entries=16)
def _logit_set(key: str, _recipes: dict, _sel: views.Selection) -> views.LogitSet:
    return views.load_logit_set(_recipes, _sel.data(), _sel.attack(), _sel.grid(), _sel.data_dir)


@st.cache_data(show_spinner=False, max_entries=16)
def _table(key: str, _logits: views.LogitSet) -> pd.DataFrame:
    return views.sample_table(_logits)


def logit_set(ctx: Ctx, names: Sequence[str] | None = None) -> tuple[str, views.LogitSet, pd.DataFrame]:
    """(key, logit set, per-sample table) of the named models (default: the selection)."""
    names = list(ctx.sel.models if names is None else names)
    key = _logit_set_key(ctx, names)
    b = _logit_set(key, ctx.recipes(names), ctx.sel)
    return key, b, _table(key, b)


@st.cache_data(show_spinner=False, max_entries=256)
def distribution(key: str, eps: float, quantity: str, split: str, _b: views.LogitSet, _t: pd.DataFrame):
    return views.distribution(_b, _t, eps, quantity, split)


@st.cache_data(show_spinner=False, max_entries=64)
def accuracy_curve(key: str, _t: pd.DataFrame) -> pd.DataFrame:
    return views.accuracy_curve(_t)


@st.cache_data(show_spinner=False, max_entries=128)
def confidence_view(key: str, a: str, b: str, eps: float, _t: pd.DataFrame):
    """(pairs, statistics, (top A-more, top B-more)) for two models at one epsilon."""
    pairs = views.confidence_pairs(_t, a, b, eps)
    return pairs, views.pair_statistics(pairs), views.top_pairs(pairs, 8)


@st.cache_resource(show_spinner=False, max_entries=16)
def model(key: str, _recipe: Recipe):
    return load_model(_recipe)


@st.cache_data(show_spinner=False, max_entries=128)
def adversarial(key: str, eps: float, index: int, _recipe: Recipe, _sel: views.Selection,
                _cached) -> samples.Adversarial:
    return samples.adversarial_example(model(_recipe.key + str(cache_dir()), _recipe), _sel.data(), _sel.attack(),
                                       eps, index, _cached, data_dir=_sel.data_dir)


def sample_detail(ctx: Ctx, b: views.LogitSet, names: Sequence[str], eps: float, idx: int) -> dict:
    """The clean image, each model's adversarial example and the sample's logits (for the bars).

    A model whose weights are not at hand (a zoo model in the demo, a checkpoint left out of a
    bundle) has None instead of its adversarial example, and `missing[name]` says why.
    """
    out = {"clean": images(ctx.sel.dataset, (idx,), ctx.sel.data_dir)[0],
           "logits": samples.sample_logits(b, names, eps, idx), "missing": {}}
    for n in names:
        r = ctx.catalog[n]
        try:
            out[n] = adversarial(f"{r.key}:{waiting.ident(ctx.sel)}", eps, idx, r, ctx.sel, b.at(n, eps)[idx])
        except LogitscopeError as exc:
            out[n], out["missing"][n] = None, str(exc)
    return out


@st.cache_data(show_spinner=False, max_entries=64)
def images(dataset: str, indices: tuple[int, ...], data_dir: str | None = None):
    return samples.images(views.Selection(dataset).data(), indices, data_dir)


def model_table(ctx: Ctx) -> pd.DataFrame:
    """Not cached: a model's status changes while the app runs, and reading it takes milliseconds."""
    sel = ctx.sel
    return overview.model_table(ctx.catalog, sel.data(), sel.attack(), sel.grid(), ctx.eps, ctx.lab_names)


def findings(ctx: Ctx) -> list[str]:
    """Not cached, for the same reason as model_table."""
    sel = ctx.sel
    return overview.findings(ctx.catalog, sel.data(), sel.attack(), sel.grid(), ctx.eps)


@st.cache_data(show_spinner=False, max_entries=64)
def toy_demo(n_classes: int, separation: float, noise: float, seed: int, eps: float) -> toy.ToyResult:
    return toy.demo(toy.ToySpec(n_classes=n_classes, separation=separation, noise=noise, seed=seed), eps)


@st.cache_data(show_spinner=False, max_entries=16)
def toy_sweep(n_classes: int, separation: float, noise: float, seed: int,
              eps_values: tuple[float, ...]) -> pd.DataFrame:
    return toy.sweep(toy.ToySpec(n_classes=n_classes, separation=separation, noise=noise, seed=seed), eps_values)


def embedding_job(key: str, b: views.LogitSet, eps: float,
                  n_neighbors: int) -> tuple[pd.DataFrame | None, jobs.Job | None]:
    """The UMAP map if cached, else the background job computing it."""
    found = emb.cached_embedding(b, eps, n_neighbors)
    if found is not None:
        return found, None
    label = "Computing the UMAP map"
    if emb.first_fit_pending():
        label += " (the first map of a session compiles UMAP: about 15 s)"
    job_key = "umap:" + emb.embedding_key(b, eps, n_neighbors, 0.1, 0) + ":" + str(cache_dir())

    def run(jc: jobs.JobContext):
        jc.report("fitting UMAP on the logit vectors", 0.1)
        return emb.compute_embedding(b, eps, n_neighbors)

    job = jobs.get(job_key)
    if job is None or job.status == jobs.DONE:
        job = jobs.submit(job_key, run, label)
    return None, job


def cache_summary() -> pd.DataFrame:
    """Not cached: the cache grows while jobs run."""
    return overview.cache_summary()


# --- the epsilon scrubber -------------------------------------------------------------------------

def eps_scrubber(ctx: Ctx, render: Callable[[float], None]) -> None:
    """A slider over the cached grid plus a play toggle, around `render(eps)` (the charts it drives).

    The slider and the charts form one fragment: scrubbing or playing reruns only them, from cached
    logits. While playing, the fragment reruns every second and steps epsilon through the grid; the
    sidebar's epsilon follows at the next full run.
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
                               help="The same epsilon as the sidebar's. Charts redraw from cached logits.")
        if c2.toggle("Play", key="w.play", help="Step through the epsilons, one per second.") != playing:
            st.rerun()  # the whole page: the fragment is rebuilt with (or without) its timer
        render(float(eps))

    st.fragment(body, run_every=1.0 if playing else None)()


def _scrubbed(name: str, key: str) -> None:
    state.store()[name] = st.session_state[key]
    st.session_state["_player_fresh"] = True  # a hand on the slider: do not step this run


# --- the distillation lab -------------------------------------------------------------------------

def lab_job_key(spec: lab.LabSpec, attack) -> str:
    return f"lab:{lab.run_id(spec, attack)}:{cache_dir()}"


def start_lab(spec: lab.LabSpec, sel: views.Selection) -> jobs.Job:
    """Submit a lab run (validating its spec first, so bad settings fail here with a message)."""
    student = spec.recipe()
    attack, grid = sel.attack(), sel.grid()
    if data.demo() is not None:  # the demo's limits: small data, few epochs, one job at a time, bundled teachers
        from core.demo import check_lab
        from core.study import is_trained

        check_lab(data.demo(), spec.epochs, is_trained(spec.teacher_recipe()),
                  any(j.key != lab_job_key(spec, attack) for j in jobs.active()))
    return jobs.submit(lab_job_key(spec, attack), lambda jc: lab.run(jc, spec, attack, grid, data_dir=sel.data_dir),
                       f"Distilling {student.name}",
                       meta={"kind": "lab", "ident": waiting.ident(sel), "covers": frozenset({student.key})})


def lab_runs(dataset: str) -> pd.DataFrame:
    """Not cached: jobs add rows while the app runs (reading the small Parquet file is fast)."""
    return lab.load_runs(dataset)


def delete_runs(run_ids: Sequence[str]) -> None:
    lab.delete_runs(run_ids)


def runs_curve(runs: pd.DataFrame) -> pd.DataFrame:
    return lab.accuracy_long(runs)


def lab_comparison_names(ctx: Ctx, spec: lab.LabSpec) -> list[str] | None:
    """Teacher, ready baseline students, then the run; None while the teacher or the run is not ready."""
    sel = ctx.sel
    teacher = spec.teacher_recipe()
    student = spec.name()
    if student not in ctx.catalog or prepare.missing([teacher, ctx.catalog[student]], sel.data(), sel.attack(),
                                                     sel.grid()):
        return None
    ready = [b.name for b in lab.baselines(teacher)
             if b.name in ctx.catalog and not prepare.missing([b], sel.data(), sel.attack(), sel.grid())]
    return list(dict.fromkeys([teacher.name, *ready, student]))


@st.cache_data(show_spinner=False, max_entries=32)
def order_agreement(key: str, teacher: str, students: Sequence[str], _b: views.LogitSet) -> pd.DataFrame:
    return lab.agreement_frame(_b.at(teacher, 0.0), {n: _b.at(n, 0.0) for n in students}, _b.labels)


def selection_summary(points: pd.DataFrame) -> pd.DataFrame:
    return emb.selection_summary(points)


def toy_histogram(result: toy.ToyResult, quantity: str) -> pd.DataFrame:
    return result.histogram(quantity)


# Streamlit collects all garbage after every script run (runner.postScriptGC), and every waiting page
# polls its job once a second: with torch, pandas and Streamlit loaded, each full collection walked
# ~300k long-lived objects for ~0.1 s while holding the GIL, so a few waiting sessions starved the
# very job they waited for. Freezing what exists once the app's modules are imported takes those
# objects out of every later collection (a full collection then takes milliseconds).
gc.freeze()
