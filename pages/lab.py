"""Distillation lab: distil a student from a teacher's manipulated logits and measure its robustness."""

import streamlit as st

from core.app import charts, jobs, lab
from core.app.demo import LAB_MAX_EPOCHS
from core.app.views import QUANTITY_LABELS
from core.engine.distill import MANIPULATIONS
from core.errors import LogitscopeError
from core.study.hyper import hyper
from core.study.recipes import is_trained, teacher_recipes
from pages import _cached as cached
from pages import _context as ui
from pages import _state as state
from pages import _waiting as waiting

ctx = ui.sidebar(("teacher", "manip", "T", "hard", "frac", "epochs", "seed", "lq"))
sel = ctx.sel
st.title("Distillation lab")
st.markdown("Finding 3: a student trained **only on clean images** to match an adversarially-trained teacher's "
            "softened logits inherits part of its robustness. Which part of the logits carries it? Manipulate "
            "the teacher's non-max logits, distil, and compare the student's accuracy under attack with the "
            "teacher's and with the baseline students'. Every run is kept in the table below, across restarts.")

with ui.guard():
    h = hyper(sel.dataset)
    demo = ctx.demo
    # the demo's teachers are the bundled ones; it distils few epochs, and only digits-sized data
    teachers = [r.name for r in teacher_recipes(sel.dataset) if demo is None or is_trained(r)] or ["pgd-at"]
    max_epochs = min(60, LAB_MAX_EPOCHS) if demo else 60
    left, right = st.columns(2)
    with left:
        teacher = st.selectbox("Teacher", teachers, **state.bind("teacher", "pgd-at" if "pgd-at" in teachers
                                                                    else teachers[0], state.choice(teachers)))
        manip = st.selectbox("Manipulation of the teacher's logits", list(MANIPULATIONS),
                             **state.bind("manip", "shuffle_nonmax", state.choice(MANIPULATIONS)))
        m = MANIPULATIONS[manip]
        st.markdown(f"**Keeps:** {m.keeps}  \n**Destroys:** {m.destroys}")
    with right:
        temperature = st.slider("Temperature", 0.5, 20.0, step=0.5, **state.bind("T", float(h.temperature),
                                                                                state.number(0.5, 20)),
                                help="Softens both softmaxes: higher shows more of the non-max logits.")
        hard = st.slider("Hard-label weight", 0.0, 1.0, step=0.05, **state.bind("hard", 0.0, state.number(0, 1)),
                         help="Weight of cross-entropy on the true labels (the rest is the teacher's soft targets).")
        frac = st.slider("Fraction of samples manipulated", 0.0, 1.0, step=0.05,
                         **state.bind("frac", 1.0, state.number(0, 1)))
        c1, c2 = st.columns(2)
        epochs = c1.slider("Epochs", 1, max_epochs, step=1, **state.bind("epochs", min(int(h.epochs), max_epochs),
                                                                         state.number(1, max_epochs, True)))
        seed = c2.number_input("Seed", 0, 999, step=1, **state.bind("seed", 0, state.number(0, 999, True)))

    spec = lab.LabSpec(sel.dataset, teacher, manip, float(temperature), float(hard), float(frac), int(epochs),
                       int(seed))
    attack = sel.attack()
    job_key = waiting.lab_job_key(spec, attack)
    if demo is not None and not demo.live_lab:
        st.caption("Live distillation is off in this hosted demo: its dataset is too large for its small host.")
    if st.button("Distill", type="primary", icon=":material/science:", key="distill",
                 disabled=demo is not None and not demo.live_lab,
                 help="Trains the student in the background (seconds on digits) and evaluates it over the grid."):
        try:
            waiting.start_lab(spec, sel)
        except LogitscopeError as exc:
            st.error(str(exc))
    job = jobs.get(job_key)
    if job is not None:
        waiting.show_job(job)

    runs = cached.lab_runs(sel.dataset)
    st.subheader(f"This configuration: {spec.name()}")
    row = runs[runs["run"] == lab.run_id(spec, attack)]
    if row.empty:
        st.info("Not run yet under this attack: press **Distill**.", icon=":material/science:")
    else:
        names = cached.lab_comparison_names(ctx, spec)
        if names is None:
            st.info("Some models of the comparison are still being prepared; see the sidebar.")
        else:
            key, bundle, table = cached.logit_set(ctx, names)
            r = row.iloc[-1]
            m1, m2, m3, m4 = st.columns(4)
            m1.metric("Clean accuracy", f"{r.clean_accuracy:.3f}")
            acc = cached.accuracy_curve(key, table)
            at_eps = acc[(acc["model"] == spec.name()) & (acc["eps"] == ctx.eps)]["accuracy"]
            m2.metric(f"Accuracy at epsilon {ctx.eps:g}", f"{at_eps.iloc[0]:.3f}" if len(at_eps) else "-")
            m3.metric("Incorrect-class order agreement", f"{r.order_agreement:.3f}",
                      help="Mean Kendall tau between the student's and the teacher's order of the wrong classes.")
            m4.metric("Run time", f"{r.seconds:.1f} s")
            c1, c2 = st.columns(2)
            with c1:
                st.markdown("**Accuracy under attack**: the run, its teacher and the baseline students")
                st.altair_chart(charts.accuracy_chart(acc, ctx.eps, names), width="stretch")
            with c2:
                q = st.selectbox("Logit statistic", [k for k in QUANTITY_LABELS if k != "logits"],
                                 format_func=QUANTITY_LABELS.get, **state.bind("lq", "max_logit",
                                                                               state.choice(QUANTITY_LABELS)))
                pair_key, pair_bundle, pair_table = cached.logit_set(ctx, [teacher, spec.name()])
                hist, _ = cached.distribution(pair_key, ctx.eps, q, "none", pair_bundle, pair_table)
                st.altair_chart(charts.distribution_chart(hist, QUANTITY_LABELS[q], [teacher, spec.name()]),
                                width="stretch")
            st.markdown("**Does the student keep the teacher's order of the incorrect classes?** (clean test images)")
            agreement = cached.order_agreement(key, teacher, [n for n in names if n != teacher], bundle)
            st.altair_chart(charts.agreement_chart(agreement, [n for n in names if n != teacher]), width="stretch")

    st.subheader("All runs")
    shown = lab.display_table(runs)
    event = st.dataframe(shown.drop(columns="run"), hide_index=True, width="stretch", on_select="rerun",
                         selection_mode="multi-row", key="runs",
                         column_config={"name": st.column_config.TextColumn(width="large"),
                                        **{c: st.column_config.NumberColumn(format="%.3f") for c in shown.columns
                                           if c.startswith("acc") or c in ("clean acc", "order agreement")}})
    if not runs.empty:
        curve = cached.runs_curve(runs)
        st.markdown("**Accuracy under attack of the last ten runs**")
        st.altair_chart(charts.accuracy_chart(curve, ctx.eps, list(dict.fromkeys(curve["model"]))),
                        width="stretch")
    c1, c2 = st.columns(2)
    c1.download_button("Download the run table (CSV)", lambda: shown.to_csv(index=False).encode(),
                       file_name=f"logitscope-lab-{sel.dataset}.csv", mime="text/csv", icon=":material/download:",
                       on_click="ignore", disabled=runs.empty)
    chosen = [shown["run"].iloc[i] for i in charts.selected_rows(event) if i < len(shown)]
    if c2.button(f"Remove {len(chosen)} selected run(s) from the table", disabled=not chosen, icon=":material/delete:"):
        cached.delete_runs(chosen)
        st.rerun()
