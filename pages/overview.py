"""Overview: what the app shows, which models exist and how far they are, and what is cached."""

import streamlit as st

from core.app import jobs, overview, palette, prepare
from core.app.demo import DISABLED, LAB_MAX_EPOCHS
from core.app.views import NORM_LABELS
from core.config import cache_dir
from core.engine.logits import entry_ok
from core.study.recipes import is_trained
from pages import _cached as cached
from pages import _context as ui
from pages import _waiting as waiting


def _names(recipes) -> str:
    return ", ".join(palette.display_name(r.name) for r in recipes)


STARTED = "_overview_job"  # the job this session last started here: its error stays shown until the next one

ctx = ui.sidebar()
sel = ctx.sel

st.title("Logitscope")
st.markdown(
    "What does adversarial training (AT) do to a classifier's **logits**? This app lets you look, following "
    "Seguin et al., *Understanding the Logit Distributions of Adversarially-Trained Deep Neural Networks* "
    "(arXiv 2108.12001). Three findings to check with your own hands:\n\n"
    "1. **AT shrinks logits.** The largest logit and the gap to the runner-up are smaller for AT models: "
    "they are less confident, on clean and attacked images alike. *(Logit distributions; Why AT shrinks logits)*\n"
    "2. **AT and standard models disagree on which images are easy.** The samples one model is sure about "
    "are not the ones the other is sure about. *(Confidence differences; Embedding)*\n"
    "3. **Robustness travels through the logits.** A student distilled from an AT teacher on clean images "
    "only inherits part of its robustness, and how much depends on the teacher's non-max logits: the "
    "per-sample confidence and the order of the incorrect classes. Manipulate them and measure. "
    "*(Distillation lab)*")

if ctx.demo is not None:
    lab_note = (f"The distillation lab runs live, at most {LAB_MAX_EPOCHS} epochs and one run at a time."
                if ctx.demo.live_lab else "The distillation lab shows the bundled runs only: live distillation is off.")
    st.info(f"**This is a hosted demo** serving the bundle {ctx.demo.describe()}. Disabled here: "
            f"{'; '.join(DISABLED)}. {lab_note} Run the app locally for everything else.", icon=":material/public:")

with ui.guard():
    ev = sel.evidence()
    demo = ctx.demo is not None
    found = cached.model_evidence(ctx)
    per_seed = cached.seed_recipes(ctx)
    shown = overview.findings_state(per_seed, sel.data(), ev)  # read before the findings, so no entry goes unseen
    view = cached.findings(ctx)
    with st.container(border=True):
        where = "this demo's bundle" if demo else "this cache"
        st.markdown(f"**The findings in {where}** ({sel.dataset}, the default study, {ctx.seeds} "
                    f"seed{'' if ctx.seeds == 1 else 's'} asked). Findings 1 and 2 are measured on **clean** test "
                    f"images; finding 3 compares robust accuracy under {view.attack}"
                    f"{' (or provisionally under PGD at that epsilon, where it is not computed yet)' if view.provisional else ''}"
                    ". Each line names its attack and epsilon. A finding **holds** when the 95% interval of its "
                    "effect lies on the claimed side, is **reversed** when it lies on the other side, and is **not "
                    "resolved** when it straddles no effect: more seeds narrow it. *What the verdicts mean* in the "
                    "README says more.")
        for line in view.lines:
            st.markdown(line)
        for line in view.waiting:
            st.caption(line)
        if view.missing_seeds and not demo:
            more = [r for s, recipes in enumerate(per_seed) if s in view.missing_seeds for r in recipes]
            n = len(view.missing_seeds)
            running = waiting.evidence_job(sel, more)
            if running is not None:
                st.caption("Those seeds are being trained and evaluated in the background: progress below.")
            elif st.button(f"Train {n} more seed{'' if n == 1 else 's'} for the findings", key="train_seeds",
                           icon=":material/model_training:",
                           help=f"Trains the findings' {len(overview.FINDING_MODELS)} models for each seed, then "
                                "evaluates them (PGD grid, AutoAttack, masking check) in the background."):
                job = waiting.start_prepare(sel, more, f"Training {n} more seed{'' if n == 1 else 's'} for the "
                                            "findings", evidence=True)
                st.session_state[STARTED] = job.key
                st.rerun()

    st.subheader("Models")

    def findings_changed() -> bool:
        """A finding can say more: an entry it reads was written since this run read them (a few file checks)."""
        return overview.findings_state(per_seed, sel.data(), ev) != shown

    for job in jobs.active():  # the first-run training, or whatever another page started
        waiting.show_job(job, findings_changed)
    started = jobs.get(st.session_state.get(STARTED, ""))
    if started is not None and not started.snapshot().active:  # failed or cancelled: say so here
        waiting.show_job(started)
    table = cached.model_table(ctx, found)
    table["model"] = table["model"].map(palette.display_name)
    robust, pgd = overview.reliable_column(ev), overview.pgd_column(sel.attack(), ctx.eps)
    st.dataframe(  # the accuracies right after the name: on a phone they are what shows without scrolling
        table, hide_index=True, width="stretch",
        column_order=["model", "clean accuracy", robust, pgd, "status", "role", "method", "teacher", "manipulation",
                      "gradients", "source", "mean max logit", "key"],
        column_config={
            "model": st.column_config.TextColumn(width=220, pinned=True),  # long names fit; a phone still shows an accuracy
            "clean accuracy": st.column_config.ProgressColumn(format="%.3f", min_value=0, max_value=1,
                                                              help="Accuracy on the clean test images."),
            robust: st.column_config.ProgressColumn(
                format="%.3f", min_value=0, max_value=1,
                help=f"Accuracy under {ev.describe()}: the reliable attack, the robust accuracy the findings use. "
                     "Blank while it is not computed (the status column says so)."),
            pgd: st.column_config.ProgressColumn(
                format="%.3f", min_value=0, max_value=1,
                help="Accuracy under the pages' PGD attack at the sidebar's epsilon: fast, but weaker than "
                     "AutoAttack, so an upper bound on robust accuracy. Blank while it is not computed."),
            "gradients": st.column_config.TextColumn(
                help="The gradient-masking check: ok, masking suspected (the reasons are listed below the "
                     "table), or not checked yet (its attacks are not computed)."),
            "mean max logit": st.column_config.NumberColumn(format="%.2f", help="On clean test images."),
            "key": st.column_config.TextColumn(help="The model's name in links, the cache and the command line."),
        })
    ui.note_twins(ctx, list(ctx.catalog))
    st.caption(f"Accuracies on the {sel.dataset} test split. Robust accuracy comes from {ev.describe()}, the "
               f"findings' epsilon. The PGD column is {NORM_LABELS[sel.norm]} PGD-{sel.steps} at the sidebar's "
               f"epsilon ({ctx.eps:g}): fast, what the other pages scrub, and an upper bound on robust accuracy (a "
               "stronger attack can only find more). Change them in the sidebar.")
    flagged = {n: e.report for n, e in found.items() if e.report is not None and e.report.flagged}
    if flagged:
        with st.expander(f"Gradient masking suspected: {', '.join(map(palette.display_name, flagged))}", expanded=True,
                         icon=":material/warning:"):
            st.markdown("A model that masks its gradients looks robust to gradient attacks without being robust: "
                        "its PGD numbers (and perhaps AutoAttack's) overstate it.")
            for n, report in flagged.items():
                st.markdown(f"**{palette.display_name(n)}**\n\n" + "\n".join(f"- {reason}" for reason in report.reasons))

    data, attack, grid = sel.data(), sel.attack(), sel.grid()
    unchecked = [n.recipe for n in prepare.evidence_missing(list(ctx.catalog.values()), data, ev)]
    unchecked.sort(key=lambda r: r.name not in overview.FINDING_MODELS)  # the findings' models first
    running = waiting.evidence_job(sel, unchecked) if unchecked else None
    no_aa = [r for r in unchecked if not entry_ok(r.key, data, ev.reliable.at(ev.eps))]
    no_check = [r for r in unchecked if r not in no_aa]
    if unchecked:
        where = ("this demo's bundle does not hold them" if demo else
                 "they are being computed in the background (progress above)" if running is not None else
                 "press *Compute AutoAttack and the masking check* below")
        parts = []
        if no_aa:
            parts.append(f"AutoAttack at eps {ev.eps:g} is not computed for {_names(no_aa)}, so their robust accuracy "
                         "cells are empty (about 15 s per digits model on a CPU)")
        if no_check:
            parts.append(f"the gradient-masking check is not computed for {_names(no_check)}: it compares "
                         f"AutoAttack with the sidebar's {NORM_LABELS[sel.norm]} PGD-{sel.steps} and other attacks, "
                         "so a new attack setting needs its own run")
        st.info(f"**Evidence missing** for {len(unchecked)} model{'' if len(unchecked) == 1 else 's'}: "
                f"{'; '.join(parts)}. It runs in the background after the PGD logits the other pages read; {where}.",
                icon=":material/pending:")
    not_ready = [n.recipe for n in prepare.missing(list(ctx.catalog.values()), data, attack, grid)]
    if not_ready and not demo:
        st.info(f"**PGD logits missing** for {len(not_ready)} model{'' if len(not_ready) == 1 else 's'} "
                f"({_names(not_ready)}): the sidebar's attack, {NORM_LABELS[sel.norm]} PGD-{sel.steps} over "
                f"{len(grid)} epsilons, has not been run on them, so their PGD cells are empty (clean accuracy does "
                "not depend on the attack and still shows). The other pages wait for these logits; press *Compute "
                "missing logits* below, or go back to the attack that was computed.", icon=":material/pending:")

    untrained = [r for r in ctx.catalog.values() if not is_trained(r)]
    c1, c2, c3 = st.columns(3)
    if c1.button(f"Train missing models ({len(untrained)})", disabled=demo or not untrained,
                 icon=":material/model_training:", key="train_missing",
                 help="Trains every model above that is not trained yet, in the background."):
        job = waiting.start_prepare(sel, untrained, f"Training {len(untrained)} missing models")
        st.session_state[STARTED] = job.key
        st.rerun()
    if c2.button(f"Compute missing logits ({len(not_ready)})", disabled=demo or not not_ready, icon=":material/bolt:",
                 key="compute_missing",
                 help="Trains what is missing and attacks every model under the sidebar's attack settings."):
        job = waiting.start_prepare(sel, not_ready, f"Preparing {len(not_ready)} models")
        st.session_state[STARTED] = job.key
        st.rerun()
    if c3.button(f"Compute AutoAttack and the masking check ({len(unchecked)})", key="compute_evidence",
                 disabled=demo or not unchecked or running is not None, icon=":material/verified:",
                 help=f"Runs {ev.describe()} and the gradient-masking check's attacks on every model above that "
                      "lacks them, in the background (training and PGD first where missing)."):
        job = waiting.start_prepare(sel, unchecked, f"AutoAttack and the masking check of {len(unchecked)} models",
                                    evidence=True)
        st.session_state[STARTED] = job.key
        st.rerun()

    if demo:
        st.subheader("The bundle")
        st.markdown(f"This demo serves the bundle {ctx.demo.describe()}. It is read, never written: the pages show "
                    "what it holds, and your lab runs last as long as your browser session and this server.")
        st.dataframe(cached.cache_summary(), hide_index=True, column_config={"part": "part of the bundle"})
    else:
        st.subheader("Cache")
        st.markdown(f"Everything computed lives in `{cache_dir()}` (set `LOGITSCOPE_CACHE` to move it). Deleting it "
                    "is always safe: the app recomputes what it needs, starting with the default models.")
        st.dataframe(cached.cache_summary(), hide_index=True)
