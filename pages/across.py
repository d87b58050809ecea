"""Across models: every model of the dataset as one point, a clean-logit statistic against robust accuracy."""

from urllib.parse import urlencode

import streamlit as st

from core.app import across
from core.app.charts_across import across_chart
from core.app.palette import display_name
from core.study.census import trend
from pages import _cached as cached
from pages import _context as ui
from pages import _state as state

PAGE_TITLES = {"distributions": "Logit distributions", "differences": "Confidence differences"}
NONE = ""  # the model picker's "nothing picked"

ctx = ui.sidebar(("x", "by", "ref", "pick"))
st.title("Across models")
st.markdown("Every model of the dataset as one point: the default study, the swept models and the RobustBench "
            "models evaluated into the cache. Does a model's **clean** logit statistic say how **robust** it is? "
            "Each point carries its 95% intervals over the test images; the dashed line is the least-squares trend. "
            "Click a point to open that model on the other pages.")


def picked_from_chart() -> None:
    name = across.selected_model(st.session_state.get("across_chart"))
    if name is not None:
        state.set_value("pick", name)


with ui.guard():
    sel, eps = ctx.sel, ctx.eps
    recipes = {n: r for n, r in ctx.catalog.items() if n not in ctx.lab_names}
    names = list(recipes)
    st.caption("The sidebar's model choice does not apply here: every model of the dataset is shown. Its dataset, "
               "attack settings and epsilon do.")
    if not names:
        st.info("No model of this dataset is in the cache yet.", icon=":material/info:")
        st.stop()
    if eps == 0:
        st.info("Robust accuracy needs an epsilon above 0: at 0 it is clean accuracy. Raise the sidebar's epsilon.",
                icon=":material/tune:")
        st.stop()
    c1, c2, c3 = st.columns([3, 2, 3])
    x = c1.selectbox("x: statistic of the clean logits", list(across.STATISTICS), format_func=across.STATISTICS.get,
                     **state.bind("x", "mean_max_logit", state.choice(across.STATISTICS)),
                     help="Averaged over the clean test images, or the rank correlation of each model's per-image "
                          "confidences with the reference model's.")
    color_by = c2.radio("Colour by", list(across.COLOR_BY), horizontal=True,
                        **state.bind("by", "method", state.choice(across.COLOR_BY)))
    default_ref = "standard" if "standard" in names else names[0]
    reference = c3.selectbox("Reference model", names, format_func=display_name,
                             **state.bind("ref", default_ref, state.choice(names)),
                             help="The model the rank correlation compares with; also the second model when a "
                                  "picked model opens on the other pages.")

    frame = cached.across_census(ctx, recipes, eps, reference)
    pts = across.points(frame, x)
    missing = across.not_plotted(frame, recipes, sel.dataset)
    t = trend(pts, "x", "y")
    if x == across.RANK_CORR and frame["reference"].isna().all():
        st.warning(f"{display_name(reference)} has no clean logits in the cache, so there is no rank correlation "
                   "with it: pick another reference model.", icon=":material/warning:")
    if pts.empty:
        st.info(f"No model of {sel.dataset} has both clean logits and robust accuracy at epsilon {eps:g} in the "
                "cache yet: the list below says what to run.", icon=":material/hourglass_empty:")
    else:
        x_title, y_title = across.x_label(x, reference), across.y_label(pts, eps)
        m1, m2 = st.columns([1, 3])
        m1.metric("Spearman across models", f"{t.spearman:+.2f}" if t.n >= 2 else "n/a",
                  help="Rank correlation of x and robust accuracy over the plotted models, with its 95% bootstrap "
                       "interval (recipes resampled: the seeds of one recipe are drawn together).")
        (m2.success if t.resolved else m2.warning)(across.trend_sentence(t, x))
        if t.n >= 3:
            st.caption("The interval resamples recipes, the seeds of one recipe together: they are not independent "
                       "draws. Students of one teacher under different manipulations are resampled as separate "
                       "recipes, though they share their teacher, so a verdict near the edge is best read as not "
                       "resolved.")
        pick = state.value("pick", NONE, state.choice([NONE, *pts["name"]]))
        st.altair_chart(across_chart(pts, across.trend_line(t, pts), x_title, y_title, color_by,
                                     picked=pick or None),
                        width="stretch", key="across_chart", on_select=picked_from_chart, selection_mode="pick")
        pgd = (pts["attack"].str.contains("upper bound")).sum()
        st.caption(f"Robust accuracy at epsilon {eps:g}: AutoAttack where its entry is cached (filled circles), else "
                   f"the PGD grid's {sel.steps}-step attack (open diamonds), an upper bound on robust accuracy"
                   + (f" ({pgd} of {len(pts)} points here). {across.autoattack_hint(sel.dataset, eps)}" if pgd else ".")
                   + " Error bars: 95% intervals over the test images. Size: training epsilon (0 for standard "
                     "training; a zoo model's published epsilon, 0 when unknown).")
        ui.note_twins(ctx, list(pts["name"]))

        # --- the picked model, opened on the other pages -------------------------------------------
        options = [NONE, *pts["name"]]
        pick = st.selectbox("Picked model", options, format_func=lambda n: display_name(n) if n else "(none: click a "
                            "point)", **state.bind("pick", NONE, state.choice(options)))
        if pick:
            links = across.link_settings(pick, reference, list(pts["name"]), sel.dataset, sel.norm, sel.steps, eps)
            cols = st.columns(len(links))
            for col, (path, settings) in zip(cols, links.items()):
                if col.button(f"Open in {PAGE_TITLES[path]}", key=f"open.{path}", icon=":material/open_in_new:",
                              help=f"{display_name(pick)} beside {display_name(settings['m'][-1])}"):
                    for k in ("m", "a", "b"):
                        if k in settings:
                            state.set_value(k, settings[k])
                    st.switch_page(f"pages/{path}.py")
            shared = " · ".join(f"[{PAGE_TITLES[p]}]({p}?{urlencode({k: state.encode(v) for k, v in s.items()})})"
                                for p, s in links.items())
            st.caption(f"Links to share (they open in a new tab): {shared}")

    if len(missing):
        st.markdown(f"**Not plotted ({len(missing)})**: what to run to add them.")
        for _, r in missing.iterrows():
            st.markdown(f"- {r['model']}: {r['why']}. Run `{r['run']}`")

    zoo = across.zoo_table(frame)
    if len(zoo):
        st.subheader("RobustBench models: published and measured")
        st.caption(across.PUBLISHED_NOTE)
        st.dataframe(zoo, hide_index=True, width="stretch", column_config={
            c: st.column_config.NumberColumn(format="%.3f") for c in ("published clean", "published AutoAttack")})

    if not pts.empty:
        st.subheader("Every plotted model")
        shown = pts[["model", "method", "source", "train_eps_text", "seed_text", "arch_text", "x_text", "y_text",
                     "robust_attack"]].rename(columns={"train_eps_text": "training eps", "seed_text": "seed",
                                                      "arch_text": "architecture", "x_text": f"x: {', '.join(x_title)}",
                                                      "y_text": f"robust accuracy at eps {eps:g}",
                                                      "robust_attack": "attack"})
        st.dataframe(shown, hide_index=True, width="stretch")
    st.download_button("Download the table behind the chart (CSV, one row per model)",
                       lambda: across.export(frame).to_csv(index=False).encode(),
                       file_name=f"logitscope-{sel.dataset}-across-eps{eps:g}.csv", mime="text/csv",
                       icon=":material/download:", on_click="ignore")
