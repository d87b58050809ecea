"""Confidence differences: which samples two models are (un)sure about, and what those images look like."""

import streamlit as st

from core.app import charts
from pages import _cached as cached
from pages import _context as ui
from pages import _state as state

ctx = ui.sidebar(("a", "b", "color", "i"))
st.title("Confidence differences")
st.markdown("Finding 2: adversarially-trained and standard models disagree on **which** samples deserve high "
            "confidence. Each point is a test image; click one (or *Inspect* below an image) to see both "
            "models' logits, its adversarial versions and the perturbation.")
with ui.guard():
    ui.need_models(ctx, 2)
    ui.require(ctx)
    key, bundle, table = cached.logit_set(ctx)
    models = list(ctx.sel.models)
    eps = ctx.eps

    c1, c2, c3 = st.columns([2, 2, 2])
    a = c1.selectbox("Model A", models, **state.bind("a", models[0], state.choice(models)))
    others = [m for m in models if m != a]
    b = c2.selectbox("Model B", others, **state.bind("b", others[0], state.choice(others)))
    color = c3.radio("Colour by", ["label", "outcome"], horizontal=True,
                     format_func={"label": "true class", "outcome": "correctness"}.get,
                     **state.bind("color", "label", state.choice(["label", "outcome"])))

    pairs, stats, (a_more, b_more) = cached.confidence_view(key, a, b, eps, table)
    n = len(bundle.labels)
    sample = state.value("i", int(a_more["idx"].iloc[0]), state.number(0, n - 1, integer=True))


    def pick_from_chart() -> None:
        idx = charts.selected_index(st.session_state.get("scatter"))
        if idx is not None:
            state.set_value("i", idx)


    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Spearman correlation", f"{stats['spearman']:.3f}", help="Rank correlation of the two confidences.")
    m2.metric("Kendall correlation", f"{stats['kendall']:.3f}")
    m3.metric("Mean confidence, A minus B", f"{stats['mean_diff']:+.3f}",
              help=f"Average over the test images of confidence({a}) - confidence({b}).")
    m4.metric("Epsilon", f"{eps:g}", help="Change it in the sidebar.")
    st.altair_chart(charts.confidence_scatter(pairs, a, b, color), width="stretch", key="scatter",
                    on_select=pick_from_chart, selection_mode="pick")


    def inspect(idx: int) -> None:
        state.set_value("i", int(idx))


    def image_row(rows, title: str, side: str) -> None:
        st.markdown(title)
        thumbs = cached.images(ctx.sel.dataset, tuple(int(i) for i in rows["idx"]), ctx.sel.data_dir)
        cols = st.columns(len(rows))
        for j, (col, (_, r)) in enumerate(zip(cols, rows.iterrows())):
            cls = bundle.classes
            col.image(charts.to_display(thumbs[j], 96), width=96)
            col.caption(f"#{r.idx} · label **{cls[r.label]}**  \nA: {cls[r.pred_a]} ({r.conf_a:.2f})  \n"
                        f"B: {cls[r.pred_b]} ({r.conf_b:.2f})")
            col.button("Inspect", key=f"inspect.{side}.{j}", on_click=inspect, args=(int(r.idx),))


    image_row(a_more, f"**{a} (A) much more confident than {b} (B)** at epsilon {eps:g}", "a")
    image_row(b_more, f"**{b} (B) much more confident than {a} (A)** at epsilon {eps:g}", "b")

    st.subheader("Selected sample")
    sample = st.number_input("Sample index", 0, n - 1, step=1, **state.bind("i", sample, state.number(
        0, n - 1, integer=True)))
    detail = cached.sample_detail(ctx, bundle, [a, b], eps, int(sample))
    cols = st.columns([1, 1, 1, 1, 1])
    label = bundle.classes[bundle.labels[sample]]
    cols[0].image(charts.to_display(detail["clean"], 112), caption=f"clean · label {label}", width=112)
    for j, name in enumerate([a, b]):
        adv = detail[name]
        if adv is None:  # no weights at hand (a zoo model in the hosted demo): the cached logits only
            cols[1 + 2 * j].caption(f"No attacked image for {name}: {detail['missing'][name]}")
            continue
        pred = bundle.classes[int(adv.logits.argmax())]
        cols[1 + 2 * j].image(charts.to_display(adv.adversarial, 112), width=112,
                              caption=f"attacked for {name}: predicts {pred}")
        cols[2 + 2 * j].image(charts.perturbation_display(adv.perturbation, eps, 112), width=112,
                              caption=f"perturbation (red +, blue -, amplified to ±{eps:g})")
    if eps == 0:
        st.caption("Epsilon is 0: the images are the clean ones. Raise epsilon in the sidebar to see the attacks.")
    elif not all(detail[m].exact for m in (a, b) if detail[m] is not None):
        st.caption("The recomputed attack does not match the cached logits exactly (the cache came from another "
                   "code version or device, e.g. a GPU's larger batches); the bars show the cached logits.")
    st.altair_chart(charts.logit_bars(detail["logits"], [a, b]), width="stretch")
    st.download_button("Download the per-sample confidences (CSV)", lambda: pairs.to_csv(index=False).encode(),
                       file_name=f"logitscope-{a}-vs-{b}-eps{eps:g}.csv", mime="text/csv",
                       icon=":material/download:", on_click="ignore")
