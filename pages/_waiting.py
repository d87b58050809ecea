"""Background work: starting jobs (first-run training, missing logits, evidence, lab runs), showing their progress.

Pages never train or attack in their own run. They ask `require`, which says what is missing, finds
(or starts) the job that makes it, shows its progress with a cancel button, and stops the page;
a fragment polls the job every second and reruns the page when the job is over.
"""

from __future__ import annotations

from typing import Callable, Sequence

import streamlit as st

from core.app import demo, jobs, lab, overview, palette, prepare, views
from core.config import cache_dir, stable_key
from core.errors import LogitscopeError
from core.study.recipes import Recipe, default_recipes, is_trained
from pages import _data as data

AUTO_TRAIN = ("digits",)  # datasets whose models train by themselves when missing (about a minute on a CPU)


def ident(sel: views.Selection) -> str:
    """What a prepare job evaluates under: data, attack, grid and cache folder."""
    return stable_key({"data": sel.data().key(), "attack": sel.attack().key(), "grid": sel.grid(),
                       "cache": str(cache_dir())})


def start_prepare(sel: views.Selection, recipes: Sequence[Recipe], label: str, restart: bool = True,
                  evidence: bool = False, checked: Sequence[Recipe] | None = None) -> jobs.Job:
    """Submit the job that trains and evaluates `recipes` under the selection's attack; with `evidence`, then
    the evidence plan (AutoAttack at the findings' eps, the masking check) of `checked` (default: `recipes`)."""
    data, attack, grid = sel.data(), sel.attack(), sel.grid()
    ev = sel.evidence() if evidence else None
    checked = list(recipes if checked is None else checked) if evidence else []
    key = prepare.job_key(recipes, data, attack, grid, ev, checked if evidence else None)
    meta = {"kind": "prepare", "ident": ident(sel), "covers": frozenset(r.key for r in recipes),
            "evidence": prepare.evidence_key(ev) if ev is not None else None,
            "checks": frozenset(r.key for r in checked)}
    return jobs.submit(key, lambda ctx: prepare.prepare(ctx, list(recipes), data, attack, grid,
                                                       data_dir=sel.data_dir, ev=ev, checked=checked),
                       label, restart=restart, meta=meta)


def _covering(sel: views.Selection, keys: set[str], active_only: bool) -> jobs.Job | None:
    return jobs.find(lambda j: j.meta.get("ident") == ident(sel) and keys <= j.meta.get("covers", set()),
                     active_only=active_only)


def evidence_job(sel: views.Selection, recipes: Sequence[Recipe], active_only: bool = True) -> jobs.Job | None:
    """The job computing the evidence plan of these recipes, if any (queued or running, unless active_only)."""
    key, keys = prepare.evidence_key(sel.evidence()), {r.key for r in recipes}
    return jobs.find(lambda j: j.meta.get("ident") == ident(sel) and j.meta.get("evidence") == key
                     and keys <= j.meta.get("checks", set()), active_only=active_only)


def bootstrap(sel: views.Selection, chosen: Sequence[Recipe]) -> None:
    """On a fresh cache, train the default models (the chosen ones first, then the findings' models, so that the
    overview states its findings soonest) and evaluate them: their PGD grids, then their evidence (the
    findings' models first), once per process.

    A cancelled first-run job is not restarted by itself: the pages then offer to try again.
    """
    defaults = default_recipes(sel.dataset)
    if sel.dataset not in AUTO_TRAIN or all(is_trained(r) for r in defaults):
        return
    if _covering(sel, {r.key for r in defaults}, active_only=False) is not None:
        return
    by_name = {r.name: r for r in defaults}
    findings_first = [by_name[n] for n in overview.FINDING_MODELS if n in by_name]  # then the rest (e.g. trades)
    ordered = list({r.key: r for r in [*chosen, *findings_first, *defaults]}.values())
    checked = sorted(ordered, key=lambda r: r.name not in overview.FINDING_MODELS)
    start_prepare(sel, ordered, f"Preparing the default {sel.dataset} models", restart=False, evidence=True,
                  checked=checked)


def _job_line(s: jobs.JobState) -> str:
    if s.status == jobs.QUEUED:
        return f"{s.label}: queued behind another job"
    left = f", about {jobs.format_seconds(s.eta)} left" if s.eta is not None else ""
    return f"{s.stage}. Overall: {jobs.format_seconds(s.elapsed)} elapsed{left}."


@st.fragment(run_every=1.0)
def _live(job_key: str, ready: Callable[[], bool] | None = None) -> None:
    job = jobs.get(job_key)
    if job is None:
        return
    s = job.snapshot()
    if not s.active or (ready is not None and ready()):
        st.rerun()  # the whole page: its data are ready now (or the job failed, and the page says so)
    st.progress(s.fraction, text=s.label)
    st.caption(_job_line(s))
    if job.cancelled:
        st.caption("Cancelling...")
    elif not mine(job):
        st.caption("Another visitor's run: it will finish by itself.")
    elif st.button("Cancel", key=f"cancel.{job_key}", icon=":material/cancel:"):
        job.cancel()


@st.fragment(run_every=2.0)
def _live_sidebar(keys: tuple[str, ...]) -> None:
    running = jobs.active()
    if tuple(j.key for j in running) != keys:
        st.rerun()  # a job finished or started: refresh the page that may be waiting on it
    for j in running:
        s = j.snapshot()
        st.progress(s.fraction, text=s.label)
        st.caption(_job_line(s))


def sidebar_jobs() -> None:
    """The sidebar's list of running jobs, refreshed every two seconds while there are any."""
    running = jobs.active()
    if running:
        st.divider()
        st.caption("Background work")
        _live_sidebar(tuple(j.key for j in running))


def show_job(job: jobs.Job, ready: Callable[[], bool] | None = None) -> str:
    """Show a job's progress (live, with cancel) or its outcome; returns its status.

    `ready`: what the page waits for is there (checked every second): the page reruns then, even while the
    job goes on with other work (the first-run job's AutoAttack, after the PGD grids a page needs).
    """
    s = job.snapshot()
    if s.active:
        _live(job.key, ready)
    elif s.status == jobs.FAILED:
        st.error(s.error or "The job failed.", icon=":material/error:")
    elif s.status == jobs.CANCELLED:
        st.warning(f"{s.label}: cancelled. Finished models and logits stay in the cache.", icon=":material/cancel:")
    return s.status


def require(sel: views.Selection, recipes: Sequence[Recipe]) -> None:
    """Stop the page with a clear waiting message until these recipes' logits are in the cache."""
    needs = prepare.missing(recipes, sel.data(), sel.attack(), sel.grid())
    if not needs:
        return
    st.info("**Waiting for:** " + "; ".join(n.describe() for n in needs)
            + f". The page fills in as soon as they are ready (attack: {sel.norm} PGD-{sel.steps}).",
            icon=":material/hourglass_top:")
    label = f"Preparing {', '.join(r.name for r in recipes)}"
    keys = {n.recipe.key for n in needs}
    job = _covering(sel, keys, active_only=True)
    if job is None and demo.active():  # the demo computes nothing but lab runs
        st.caption("This hosted demo shows only what its bundle holds and does not train or attack models: pick "
                   "other models in the sidebar.")
        st.stop()
    if job is None:
        last = _covering(sel, keys, active_only=False)
        only_logits = all(n.what == "logits" and n.recipe.zoo is None for n in needs)  # zoo: a download first
        if last is not None and last.status in (jobs.FAILED, jobs.CANCELLED):
            job = last
        elif sel.dataset in AUTO_TRAIN or only_logits:
            job = start_prepare(sel, recipes, label)
        else:
            st.caption(f"Training {sel.dataset} models can take many minutes on a CPU, so it starts on request.")
            if st.button("Train and evaluate them now", type="primary", icon=":material/model_training:"):
                start_prepare(sel, recipes, label)
                st.rerun()
            st.stop()
    data, attack, grid = sel.data(), sel.attack(), sel.grid()
    if show_job(job, lambda: not prepare.missing(recipes, data, attack, grid)) in (jobs.FAILED, jobs.CANCELLED):
        if st.button("Try again", icon=":material/replay:", key="retry.prepare"):
            start_prepare(sel, recipes, label)
            st.rerun()
    st.stop()


def forget_job(job: jobs.Job) -> None:
    """Drop a finished job, so that the next request starts it afresh."""
    jobs.forget(job.key)


# --- the distillation lab's runs ------------------------------------------------------------------

def lab_job_key(spec: lab.LabSpec, attack) -> str:
    """A run's job: one per run and visitor in the demo (a visitor never sees another's job as theirs)."""
    return f"lab:{lab.run_id(spec, attack)}:{data.visitor() or ''}:{cache_dir()}"


def mine(job: jobs.Job) -> bool:
    """This session may cancel the job: always in a local app, only its own in the demo."""
    return job.meta.get("owner") in (None, data.visitor())


def start_lab(spec: lab.LabSpec, sel: views.Selection) -> jobs.Job:
    """Submit a lab run (validating its spec first, so bad settings fail here with a message)."""
    student = spec.recipe()
    attack, grid = sel.attack(), sel.grid()
    owner = data.visitor()
    if data.demo() is not None:  # the demo's limits: small data, few epochs, one job at a time, bundled teachers
        demo.check_lab(data.demo(), spec.epochs, is_trained(spec.teacher_recipe()),
                       any(j.key != lab_job_key(spec, attack) for j in jobs.active()), spec.replicates)
        own = lab.load_runs(spec.dataset, owner)
        own = own[own["owner"] == owner]
        if len(own) >= lab.VISITOR_RUNS and lab.run_id(spec, attack) not in set(own["run"]):
            raise LogitscopeError(f"You have {len(own)} run{'' if len(own) == 1 else 's'} in this demo, the most a "
                                  "visitor keeps: select one of yours in the run table and remove it to run another.")
    return jobs.submit(lab_job_key(spec, attack),
                       lambda jc: lab.run(jc, spec, attack, grid, data_dir=sel.data_dir, owner=owner or ""),
                       f"Distilling {palette.display_name(student.name)}",
                       meta={"kind": "lab", "ident": ident(sel), "covers": frozenset({student.key}), "owner": owner})
