"""Distillation lab: distil a student from a teacher's manipulated logits and measure its robustness."""

import json

import streamlit as st

from core.app import charts, jobs, lab, palette
from core.app.demo import LAB_MAX_EPOCHS
from core.app.views import QUANTITY_LABELS
from core.engine.distill import MANIPULATIONS
from core.errors import LogitscopeError
from core.study.hyper import hyper
from core.study.recipes import is_trained, teacher_recipes
from pages import _cached as cached
from pages import _context as ui
from pages import _data as data
from pages import _state as state
from pages import _waiting as waiting

ctx = ui.sidebar(("teacher", "manip", "T", "hard", "frac", "epochs", "seed", "reps", "lq"))
sel = ctx.sel
st.title("Distillation lab")
st.markdown("Finding 3: a student trained **only on clean images** to match an adversarially-trained teacher's "
            "softened logits inherits part of its robustness. Which part of the logits carries it? Manipulate "
            "the teacher's non-max logits, distil, and compare the student's accuracy under attack with the "
            "teacher's and with the baseline students'. Every run is kept in the table below, across restarts.")
st.caption("Robust accuracy comes from AutoAttack at the findings' epsilon, with its 95% interval over the test "
           "images (and over the students' seeds with several replicates); the PGD accuracies over the grid are "
           "faster and only upper bounds.")

with ui.guard():
    h = hyper(sel.dataset)
    demo = ctx.demo
    # the demo's teachers are the bundled ones; it distils few epochs, and only digits-sized data
    teachers = [r.name for r in teacher_recipes(sel.dataset) if demo is None or is_trained(r)] or ["pgd-at"]
    max_epochs = min(60, LAB_MAX_EPOCHS) if demo else 60
    left, right = st.columns(2)
    with left:
        teacher = st.selectbox("Teacher", teachers, format_func=palette.display_name, **state.bind("teacher", "pgd-at" if "pgd-at" in teachers
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
        c1, c2, c3 = st.columns([2, 1, 1])
        epochs = c1.slider("Epochs", 1, max_epochs, step=1, **state.bind("epochs", min(int(h.epochs), max_epochs),
                                                                         state.number(1, max_epochs, True)))
        seed = c2.number_input("Seed", 0, 999, step=1, **state.bind("seed", 0, state.number(0, 999, True)))
        reps = c3.number_input("Replicates", 1, lab.MAX_REPLICATES, step=1,
                               **state.bind("reps", 1, state.number(1, lab.MAX_REPLICATES, True)),
                               help="Students distilled with seeds seed, seed+1, ...: the intervals then cover "
                                    "seed-to-seed variation too. The baselines are distilled with the same seeds. "
                                    "Each replicate adds seconds to a minute on digits (mostly AutoAttack).")

    spec = lab.LabSpec(sel.dataset, teacher, manip, float(temperature), float(hard), float(frac), int(epochs),
                       int(seed), int(reps))
    # the baselines' roles in the interval charts wear the colours of the study's models they stand for
    roles = {**ctx.colors, **{name: ctx.colors[m] for name, m in (
        (lab.BASELINES["untouched"][0], f"student:{teacher}:none"), (lab.BASELINES["standard"][0],
                                                                     "student:standard:none"),
        ("the run's student", spec.name())) if m in ctx.colors}}
    attack = sel.attack()
    job_key = waiting.lab_job_key(spec, attack)
    if demo is not None and not demo.live_lab:
        st.caption("Live distillation is off in this hosted demo: its dataset is too large for its small host.")
    if st.button("Distill", type="primary", icon=":material/science:", key="distill",
                 disabled=demo is not None and not demo.live_lab,
                 help="Distils the students and the baselines in the background and evaluates them under PGD "
                      "over the grid and under AutoAttack (seconds to a minute per replicate on digits)."):
        try:
            waiting.start_lab(spec, sel)
        except LogitscopeError as exc:
            st.error(ui.shown_error(str(exc)), icon=":material/error:")
    job = jobs.get(job_key)
    if job is not None:
        waiting.show_job(job)

    owner = data.visitor()  # a demo visitor's runs are their own; None in a local app
    runs = cached.lab_runs(sel.dataset, owner)
    if demo is not None:
        st.caption(f"In this demo you see the bundle's runs (read-only) and your own, at most {lab.VISITOR_RUNS}; "
                   "other visitors' runs are theirs. Your runs last as long as this browser session and the "
                   f"server: the demo keeps the newest {lab.SHARED_RUNS} visitors' runs in all.")
    st.subheader(f"This configuration: {palette.display_name(spec.name())}")
    row = runs[runs["run"] == lab.run_id(spec, attack)]
    if row.empty:
        st.info("Not run yet under this attack: press **Distill**.", icon=":material/science:")
    else:
        r = row.iloc[-1]
        head = lab.summary(r)
        seeds = f"the {r.replicates} seeds" if r.replicates > 1 else "one seed"
        ref, claim = lab.BASELINES["untouched"][:2]
        m1, m2 = st.columns(2)
        m1.metric(f"Robust accuracy ({head['label']})", head["robust"] or "-",
                  help=f"{head['attack']}; 95% interval over the test images and {seeds}." if head["attack"] else
                  "Not evaluated under AutoAttack: a run recorded before it, or pyautoattack is not installed here.")
        m2.metric(f"Difference to {ref} ({head['label']})", head["difference"] or "-",
                  help="Run minus baseline, paired: the same seeds, the same test images; 95% interval.")
        if head["verdict"]:
            st.markdown(f"**Verdict** on *{claim}*: **{head['verdict']}** (holds or reversed when the paired "
                        "interval lies wholly below or above zero).")
        m4, m5, m6, m7 = st.columns(4)
        pgd = json.loads(r.robust_accuracy).get(f"{ctx.eps:g}")
        m4.metric("Clean accuracy", f"{r.clean_accuracy:.3f}", help=f"Mean over {seeds}.")
        m5.metric(f"{'' if r.norm == 'linf' else 'L2 '}PGD-{r.steps} acc. @{ctx.eps:g} (upper bound)",
                  f"{pgd:.3f}" if pgd is not None else "-",
                  help=f"{r.norm} PGD-{r.steps} at the sidebar's epsilon {ctx.eps:g}, mean over {seeds}.")
        m6.metric("Incorrect-class order agreement", f"{r.order_agreement:.3f}",
                  help="Mean Kendall tau between the student's and the teacher's order of the wrong classes.")
        if r.reused is True:
            m7.metric("Students", "reused", help=f"Every student was trained before (the default study or an earlier "
                      f"run), so nothing was distilled: the run re-read their evaluations in {r.seconds:.1f} s.")
        else:
            m7.metric("Run time", f"{r.seconds:.1f} s", help="Distilling and evaluating the students and baselines.")
        frame = lab.interval_frame(row.tail(1))
        if len(frame):
            st.markdown(f"**Robust accuracy ({head['label']})**, 95% intervals: the run's students and the "
                        "baselines (distilled with the same settings and seeds, nothing manipulated)")
            st.altair_chart(charts.interval_chart(frame, f"robust accuracy ({head['label']})", colors=roles),
                            width="stretch")
        names = cached.lab_comparison_names(ctx, spec)
        if names is None:
            st.info("Some models of the comparison are still being prepared; see the sidebar.")
        else:
            key, bundle, table = cached.logit_set(ctx, names)
            acc = cached.accuracy_curve(key, table)
            c1, c2 = st.columns(2)
            with c1:
                st.markdown(f"**Accuracy under {attack.norm} PGD-{attack.steps}** (upper bounds): the run's first "
                            "student, its teacher and the default study's baseline students")
                st.altair_chart(charts.accuracy_chart(acc, ctx.eps, names, f"accuracy under PGD-{attack.steps}",
                                                      colors=ctx.colors),
                                width="stretch")
            with c2:
                q = st.selectbox("Logit statistic", [k for k in QUANTITY_LABELS if k != "logits"],
                                 format_func=QUANTITY_LABELS.get, **state.bind("lq", "max_logit",
                                                                               state.choice(QUANTITY_LABELS)))
                pair_key, pair_bundle, pair_table = cached.logit_set(ctx, [teacher, spec.name()])
                hist, _ = cached.distribution(pair_key, ctx.eps, q, "none", pair_bundle, pair_table)
                st.altair_chart(charts.distribution_chart(hist, QUANTITY_LABELS[q], [teacher, spec.name()],
                                                          colors=ctx.colors),
                                width="stretch")
            st.markdown("**Does the student keep the teacher's order of the incorrect classes?** (clean test images)")
            agreement = cached.order_agreement(key, teacher, [n for n in names if n != teacher], bundle)
            st.altair_chart(charts.agreement_chart(agreement, [n for n in names if n != teacher], colors=ctx.colors),
                            width="stretch")

    st.subheader("All runs")
    shown = lab.display_table(runs, owner)
    long = [c for c in shown.columns if "interval" in c or "(AutoAttack" in c or c.startswith("acc @")
            or "verdict" in c]
    event = st.dataframe(shown.drop(columns="run"), hide_index=True, width="stretch", on_select="rerun",
                         selection_mode="multi-row", key="runs",
                         column_config={"name": st.column_config.TextColumn(width="large"),
                                        **{c: st.column_config.Column(width="large", help=c) for c in long},
                                        **{c: st.column_config.NumberColumn(format="%.3f", help=c)
                                           for c in shown.columns if c.startswith("acc")
                                           or c in ("clean acc", "order agreement")}})
    picked = [i for i in charts.selected_rows(event) if i < len(shown)]
    chosen = shown["run"].iloc[picked].tolist()
    if not runs.empty:
        compared = runs[runs["run"].isin(chosen)] if chosen else runs
        which = f"the {len(chosen)} selected run{'' if len(chosen) == 1 else 's'}" if chosen else \
            "the last ten runs (select rows in the table to compare those instead)"
        frame = lab.interval_frame(compared)
        if len(frame):
            label = f"robust accuracy ({lab.summary(compared[compared['reliable_eps'].notna()].iloc[-1])['label']})"
            st.markdown(f"**{label[0].upper() + label[1:]} of {which}** with their baselines, 95% intervals")
            st.altair_chart(charts.interval_chart(frame, label, colors=roles), width="stretch")
        curve = cached.runs_curve(compared)
        st.markdown(f"**Accuracy under PGD of {which}** (upper bounds; means over replicates)")
        st.altair_chart(charts.accuracy_chart(curve, ctx.eps, list(dict.fromkeys(curve["model"])),
                                              "accuracy under PGD (upper bound)", colors=ctx.colors), width="stretch")
    removable = lab.owned(runs[runs["run"].isin(chosen)], owner).sum() if chosen else 0
    c1, c2, c3 = st.columns(3)
    c1.download_button("Download the run table (CSV)", lambda: shown.to_csv(index=False).encode(),
                       file_name=f"logitscope-lab-{sel.dataset}.csv", mime="text/csv", icon=":material/download:",
                       on_click="ignore", disabled=runs.empty)
    names = [n for n in runs[runs["run"].isin(chosen)]["name"] if n in ctx.catalog]
    if c2.button(f"Compare {len(names)} selected on the other pages", disabled=not names, icon=":material/compare:",
                 help="Shows the selected runs' students, with their teacher, on Logit distributions (and every page "
                      "that reads the sidebar's models)."):
        teachers = list(dict.fromkeys(runs[runs["run"].isin(chosen)]["teacher"]))
        state.set_value("m", list(dict.fromkeys([t for t in teachers if t in ctx.catalog] + names)))
        st.switch_page("pages/distributions.py")
    what = "of your runs" if owner is not None else "selected run(s)"
    if c3.button(f"Remove {removable} {what} from the table", disabled=not removable, icon=":material/delete:",
                 help="Bundled runs are read-only in the demo." if owner is not None else
                 "Their checkpoints stay in the cache."):
        cached.delete_runs(chosen, owner)
        st.rerun()
