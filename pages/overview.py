"""Overview: what the app shows, which models exist and how far they are, and what is cached."""

import streamlit as st

from core.app import jobs
from core.app.demo import DISABLED, LAB_MAX_EPOCHS
from core.config import cache_dir
from core.study.recipes import is_trained
from pages import _cached as cached
from pages import _context as ui
from pages import _waiting as waiting

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
    found = cached.findings(ctx)
    if found:
        with st.container(border=True):
            st.markdown(f"**In this cache** ({sel.dataset}, {sel.norm} PGD-{sel.steps}, epsilon {ctx.eps:g}):")
            for line in found:
                st.markdown(line)

    st.subheader("Models")
    for job in jobs.active():  # the first-run training, or whatever another page started
        waiting.show_job(job)
    started = jobs.get(st.session_state.get(STARTED, ""))
    if started is not None and not started.snapshot().active:  # failed or cancelled: say so here
        waiting.show_job(started)
    table = cached.model_table(ctx)
    robust = f"robust accuracy @ eps {ctx.eps:g}"
    st.dataframe(
        table, hide_index=True, width="stretch",
        column_order=["model", "role", "method", "teacher", "manipulation", "clean accuracy", robust, "source",
                      "status", "mean max logit"],
        column_config={
            "clean accuracy": st.column_config.ProgressColumn(format="%.3f", min_value=0, max_value=1),
            robust: st.column_config.ProgressColumn(format="%.3f", min_value=0, max_value=1),
            "mean max logit": st.column_config.NumberColumn(format="%.2f"),
        })
    st.caption(f"Accuracies on the {sel.dataset} test split; robust accuracy under {sel.norm} PGD-{sel.steps} at the "
               "sidebar's epsilon. Change them in the sidebar.")

    untrained = [r for r in ctx.catalog.values() if not is_trained(r)]
    not_ready = [n for n, s in zip(table["model"], table["status"]) if s != "ready"]
    c1, c2 = st.columns(2)
    demo = ctx.demo is not None
    if c1.button(f"Train missing models ({len(untrained)})", disabled=demo or not untrained,
                 icon=":material/model_training:", key="train_missing",
                 help="Trains every model above that is not trained yet, in the background."):
        job = waiting.start_prepare(sel, untrained, f"Training {len(untrained)} missing models")
        st.session_state[STARTED] = job.key
        st.rerun()
    if c2.button(f"Compute missing logits ({len(not_ready)})", disabled=demo or not not_ready, icon=":material/bolt:",
                 key="compute_missing",
                 help="Trains what is missing and attacks every model under the sidebar's attack settings."):
        job = waiting.start_prepare(sel, [ctx.catalog[n] for n in not_ready], f"Preparing {len(not_ready)} models")
        st.session_state[STARTED] = job.key
        st.rerun()

    st.subheader("Cache")
    if demo:
        st.markdown(f"The demo reads a temporary copy of its bundle in `{cache_dir()}`; the bundle itself is never "
                    "written. Lab runs of this session live there until the app stops.")
    else:
        st.markdown(f"Everything computed lives in `{cache_dir()}` (set `LOGITSCOPE_CACHE` to move it). Deleting it "
                    "is always safe: the app recomputes what it needs, starting with the default models.")
    st.dataframe(cached.cache_summary(), hide_index=True)
