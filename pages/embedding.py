"""Embedding: a UMAP map of the compared models' logit vectors at the current epsilon."""

import streamlit as st

from core.app import charts
from pages import _cached as cached
from pages import _context as ui
from pages import _state as state
from pages import _waiting as waiting

ctx = ui.sidebar(("ecolor", "nn"))
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

    c1, c2, c3 = st.columns([3, 2, 1])
    color = c1.radio("Colour by", ["label", "correct", "confidence"], horizontal=True,
                     format_func={"label": "true class", "correct": "correctness", "confidence": "confidence"}.get,
                     **state.bind("ecolor", "label", state.choice(["label", "correct", "confidence"])))
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

    event = st.altair_chart(charts.embedding_chart(emb, color, models), width="stretch", key="map",
                            on_select="rerun", selection_mode="brush")
    chosen = charts.selected_points(event, emb)
    if chosen.empty:
        st.caption("Nothing selected yet: drag a rectangle on the map (double-click clears it).")
    else:
        st.markdown(f"**{len(chosen)} points selected**")
        st.dataframe(cached.selection_summary(chosen), hide_index=True)
        shown = chosen.head(48)
        thumbs = cached.images(ctx.sel.dataset, tuple(int(i) for i in shown["idx"]), ctx.sel.data_dir)
        st.image(charts.thumbnails(thumbs, 64), width=64,
                 caption=[f"{r.model}: #{r.idx} {r.label}->{r.pred} ({r.confidence:.2f})" for r in shown.itertuples()])
        if len(chosen) > len(shown):
            st.caption(f"Showing the first {len(shown)} of {len(chosen)} points.")
