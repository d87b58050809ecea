"""Embedding: a UMAP map of the compared models' logit vectors at the current epsilon."""

import streamlit as st

from core.app import charts
from core.app import embedding as emb_core
from pages import _cached as cached
from pages import _context as ui
from pages import _state as state
from pages import _waiting as waiting

COLOURS = {"label": "true class", "correct": "correctness", "confidence": "confidence", "model": "model"}
THUMBS = 48  # thumbnails of a selection, drawn evenly from the models
BRUSHED = "_embedding_brushed"  # the last run's selection came from the map (not from the link)

ctx = ui.sidebar(("ecolor", "nn", "sel"))
st.title("Embedding of the logit vectors")
st.markdown("Each point is one test image as one model sees it: its whole logit vector, placed by UMAP so that "
            "similar vectors sit close. All compared models share one map, so you can see where an AT model's "
            "uncertain samples lie compared with a standard model's, and where attacks push them. **Drag a "
            "rectangle** on the map to see the images inside it.")
with ui.guard():
    ui.need_models(ctx, 1)
    ui.require(ctx)
    key, bundle, table = cached.logit_set(ctx)
    models = list(ctx.sel.models)
    names = charts.display_names(models)
    linked = state.value("sel", None, emb_core.parse_bounds)  # read from the link on the session's first run

    c1, c2, c3 = st.columns([3, 2, 1])
    color = c1.radio("Colour by", list(COLOURS), horizontal=True, format_func=COLOURS.get,
                     **state.bind("ecolor", "label", state.choice(COLOURS)),
                     help="Each model also has its own shape; 'model' colours them with their colours on every page.")
    neighbours = c2.slider("UMAP neighbours", 5, 50, step=5, **state.bind("nn", 15, state.number(5, 50, True)),
                           help="Small values keep local structure, large values the global layout.")
    c3.metric("Epsilon", f"{ctx.eps:g}", help="Change it in the sidebar.")

    emb, job = cached.embedding_job(key, bundle, ctx.eps, int(neighbours))
    if emb is None:
        st.info(f"**Waiting for:** the UMAP map of {len(models)} models x {len(bundle.labels)} test images at "
                f"epsilon {ctx.eps:g}.", icon=":material/hourglass_top:")
        if waiting.show_job(job) == "failed" and st.button("Try again", icon=":material/replay:"):
            waiting.forget_job(job)
            st.rerun()
        st.stop()

    on_map = "map" in st.session_state  # False on the page's first run: opened from a link or another page
    event = st.altair_chart(charts.embedding_chart(emb, color, models, colors=ctx.colors), width="stretch",
                            key="map", on_select="rerun", selection_mode="brush")
    brushed, was_brushed = charts.selected_bounds(event), st.session_state.pop(BRUSHED, False)
    if brushed is not None:  # a rectangle on the map: it goes into the link, rounded outward
        st.session_state[BRUSHED] = True
        linked = emb_core.link_bounds(brushed)
        state.set_value("sel", linked)
    elif was_brushed and on_map:  # the rectangle was cleared on the map (double-click)
        linked = None
        state.set_value("sel", None)
    chosen = charts.selected_points(event, emb) if brushed is not None else (
        emb_core.points_in(emb, linked) if linked is not None else emb.iloc[0:0])
    if linked is None:
        st.query_params.pop("sel", None)
    else:
        st.query_params["sel"] = emb_core.bounds_text(linked)

    if brushed is None and linked is not None:
        x0, x1, y0, y1 = linked
        c1, c2 = st.columns([5, 1], vertical_alignment="center")
        c1.info(f"This selection came from the link (or your last visit to this page): the rectangle UMAP 1 in "
                f"[{x0:g}, {x1:g}], UMAP 2 in [{y0:g}, {y1:g}], not drawn on the map. Drag a new rectangle to "
                "replace it.", icon=":material/link:")
        if c2.button("Clear selection", icon=":material/close:", key="clear_sel"):
            state.set_value("sel", None)
            st.query_params.pop("sel", None)
            st.rerun()
    if chosen.empty:
        st.caption("Nothing selected yet: drag a rectangle on the map (double-click clears it).")
    else:
        summary = cached.selection_summary(chosen, models)
        st.markdown(f"**{len(chosen)} points selected**: each model's share of them")
        st.dataframe(summary.assign(model=summary["model"].map(names)), hide_index=True,
                     column_config={"share": st.column_config.NumberColumn(format="percent"),
                                    "accuracy": st.column_config.NumberColumn(format="%.3f"),
                                    "mean confidence": st.column_config.NumberColumn(format="%.3f")})
        shown = emb_core.spread(chosen, models, THUMBS)
        thumbs = dict(zip(shown.index, charts.thumbnails(
            cached.images(ctx.sel.dataset, tuple(int(i) for i in shown["idx"]), ctx.sel.data_dir), 64)))
        for m in models:
            rows = shown[shown["model"] == m]
            total = int((chosen["model"] == m).sum())
            if not total:
                continue
            st.markdown(f"**{names[m]}**: {total} points" + (f", showing {len(rows)}" if len(rows) < total else ""))
            st.image([thumbs[i] for i in rows.index], width=64,
                     caption=[f"#{r.idx} {r.label}→{r.pred} ({r.confidence:.2f})" for r in rows.itertuples()])
        if len(chosen) > len(shown):
            st.caption(f"Showing {len(shown)} of {len(chosen)} points, drawn evenly from each model.")
