"""The cached core calls: the only module with `st.cache_*`.

Cached functions take a string key that names what they read (model keys, attack, grid, cache
folder) plus the objects themselves as `_`-prefixed arguments, which Streamlit does not hash. The
uncached ones here read state that changes while the app runs (jobs add models and lab runs).
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import streamlit as st

from core.app import embedding as emb
from core.app import jobs, lab, overview, prepare, samples, toy, views
from core.config import cache_dir, stable_key
from core.errors import LogitscopeError
from core.study import census, evidence
from core.study.recipes import Recipe, is_trained, load_model
from pages import _waiting as waiting
from pages._context import Ctx


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

    "clean_logits" are the logits on the clean image, "logits" those under the attack at eps (None
    at eps 0). A model whose weights are not at hand (a zoo model in the demo, a checkpoint left out
    of a bundle) has None instead of its adversarial example, and `missing[name]` says why.
    """
    clean, attacked = samples.clean_and_attacked_logits(b, names, eps, idx)
    out = {"clean": images(ctx.sel.dataset, (idx,), ctx.sel.data_dir)[0], "clean_logits": clean,
           "logits": attacked, "missing": {}}
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


def _evidence_state(ctx: Ctx, recipes: Sequence[Recipe]) -> str:
    """What the evidence of these recipes reads: their keys, how far each is computed, the plan, the cache."""
    sel, ev = ctx.sel, ctx.sel.evidence()
    data = sel.data()
    state = [(r.key, is_trained(r), overview.finding_entries(r, data, ev), evidence.is_complete(r, data, ev))
             for r in recipes]
    return stable_key({"ident": waiting.ident(sel), "plan": prepare.evidence_key(ev), "state": state})


@st.cache_data(show_spinner=False, max_entries=64)
def _model_evidence(key: str, _recipes: dict, _sel: views.Selection) -> dict[str, views.ModelEvidence]:
    return views.model_evidence(_recipes, _sel.data(), _sel.evidence(), _sel.data_dir)


def model_evidence(ctx: Ctx, names: Sequence[str] | None = None) -> dict[str, views.ModelEvidence]:
    """Robust accuracy (AutoAttack) and the gradient check of the named models (default: the catalog's).

    Cached by how far each model's evidence is computed: an entry, once written, never changes.
    """
    recipes = dict(ctx.catalog) if names is None else ctx.recipes(names)
    return _model_evidence(_evidence_state(ctx, list(recipes.values())), recipes, ctx.sel)


def model_table(ctx: Ctx, found: dict[str, views.ModelEvidence]) -> pd.DataFrame:
    """Not cached: a model's status changes while the app runs, and reading it takes milliseconds."""
    sel = ctx.sel
    return overview.model_table(ctx.catalog, sel.data(), sel.attack(), sel.grid(), ctx.eps, sel.evidence(), found,
                                ctx.lab_names)


def seed_recipes(ctx: Ctx) -> list[list[Recipe]]:
    """The findings' models of seeds 0..N-1 (N: the sidebar's "Seeds for the findings")."""
    return overview.seed_recipes(ctx.sel.dataset, ctx.seeds, ctx.catalog)


@st.cache_data(show_spinner=False, max_entries=32)
def _findings(key: str, _per_seed: list, _sel: views.Selection) -> overview.FindingsView:
    return overview.findings_view(_per_seed, _sel.data(), _sel.evidence())


def findings(ctx: Ctx) -> overview.FindingsView:
    """The findings' verdicts, cached by how far their models are evaluated (the bootstraps take a moment)."""
    per_seed = seed_recipes(ctx)
    key = _evidence_state(ctx, [r for recipes in per_seed for r in recipes])
    return _findings(key, per_seed, ctx.sel)


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


def lab_runs(dataset: str, owner: str | None = None) -> pd.DataFrame:
    """Not cached: jobs add rows while the app runs (reading the small Parquet file is fast). With `owner`
    (a demo visitor): the bundle's runs and theirs."""
    return lab.load_runs(dataset, owner)


def delete_runs(run_ids: Sequence[str], owner: str | None = None) -> int:
    return lab.delete_runs(run_ids, owner)


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


def selection_summary(points: pd.DataFrame, models: Sequence[str] | None = None) -> pd.DataFrame:
    return emb.selection_summary(points, models)


def toy_histogram(result: toy.ToyResult, quantity: str) -> pd.DataFrame:
    return result.histogram(quantity)


@st.cache_data(show_spinner=False, max_entries=32)
def _census(key: str, _recipes: dict, _sel: views.Selection, eps: float, reference: str | None) -> pd.DataFrame:
    s = _sel
    return census.census(_recipes, s.dataset, s.norm, s.steps, eps, reference=reference, data_dir=s.data_dir)


def across_census(ctx: Ctx, recipes: dict[str, Recipe], eps: float, reference: str | None) -> pd.DataFrame:
    """Every model's census row (core.study.census), cached by which of its cache entries exist."""
    s = ctx.sel
    state = census.state(recipes, s.dataset, s.norm, s.steps, eps, data_dir=s.data_dir)
    key = stable_key({"ident": waiting.ident(s), "eps": eps, "ref": reference, "state": state})
    return _census(key, recipes, s, eps, reference)
