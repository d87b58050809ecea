"""Confidence differences: which samples two models are (un)sure about, and what those images look like."""

import streamlit as st

from core.app import charts, charts_sample
from core.app.palette import display_name
from pages import _cached as cached
from pages import _context as ui
from pages import _internals as internals
from pages import _state as state

DETAIL = "selected-sample"       # the detail's heading id, scrolled to on a selection
SELECTED = "_differences_picked"  # set by a selection's callback: this run brings the detail into view
THUMB = 80                        # px, at most, a thumbnail; its item is a little wider for the caption and button
DETAIL_PX = 96                    # px, at most, an image of the selected sample: three fit a phone's line

ctx = ui.sidebar(("a", "b", "on", "color", "i"))
st.title("Confidence differences")
st.markdown("Finding 2: adversarially-trained and standard models disagree on **which** samples deserve high "
            "confidence, even on clean images. Each point is a test image; click one (or *Inspect* below an "
            "image) to see both models' logits on it, clean and attacked, and the attacks' perturbations.")


def where(eps: float) -> str:
    """What a number was computed on, as every heading and caption of the page says it."""
    return "on clean images" if eps == 0 else f"under PGD at epsilon {eps:g}"


def picked(idx: int) -> None:
    state.set_value("i", int(idx))
    st.session_state[SELECTED] = True


with ui.guard():
    ui.need_models(ctx, 2)
    ui.require(ctx)
    key, bundle, table = cached.logit_set(ctx)
    models = list(ctx.sel.models)

    c1, c2 = st.columns(2)
    a = c1.selectbox("Model A", models, format_func=display_name, **state.bind("a", models[0], state.choice(models)))
    others = [m for m in models if m != a]
    b = c2.selectbox("Model B", others, format_func=display_name,
                     **state.bind("b", others[0], state.choice(others)))
    name_a, name_b = display_name(a), display_name(b)
    ui.note_twins(ctx, [a, b])
    c3, c4 = st.columns(2)
    on = c3.radio("Confidences on", ["clean", "attacked"], horizontal=True,
                  format_func={"clean": "clean images",
                               "attacked": f"attacked images (PGD at epsilon {ctx.eps:g}, the sidebar's)"}.get,
                  help="Finding 2 is about clean images. Attacked: each model's confidence on its own PGD attack "
                       "at the sidebar's epsilon, where a confident standard model is mostly one fooled.",
                  **state.bind("on", "clean", state.choice(["clean", "attacked"])))
    color = c4.radio("Colour by", ["label", "outcome"], horizontal=True,
                     format_func={"label": "true class", "outcome": "correctness"}.get,
                     **state.bind("color", "label", state.choice(["label", "outcome"])))
    eps = ctx.eps if on == "attacked" else 0.0
    if on == "attacked" and eps == 0:
        st.caption("The sidebar's epsilon is 0, so the attacked images are the clean ones: raise it in the sidebar.")

    pairs, stats, (a_more, b_more) = cached.confidence_view(key, a, b, eps, table)
    n = len(bundle.labels)
    sample = state.value("i", int(a_more["idx"].iloc[0]), state.number(0, n - 1, integer=True))

    def pick_from_chart() -> None:
        idx = charts.selected_index(st.session_state.get("scatter"))
        if idx is not None:
            picked(idx)

    st.subheader(f"Confidence of A against B, {where(eps)}")
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Spearman correlation", f"{stats['spearman']:.3f}",
              help=f"Rank correlation of the two models' confidences, {where(eps)}.")
    m2.metric("Kendall correlation", f"{stats['kendall']:.3f}", help=f"Kendall's tau of the confidences, {where(eps)}.")
    m3.metric("Mean confidence, A minus B", f"{stats['mean_diff']:+.3f}",
              help=f"Average over the test images of confidence({name_a}) - confidence({name_b}), {where(eps)}.")
    m4.metric("Epsilon", "0 (clean)" if eps == 0 else f"{eps:g} (PGD)",
              help="The epsilon of every number and image list above and below the detail: 0 on clean images, "
                   "the sidebar's under attack. Switch with *Confidences on*.")
    st.altair_chart(charts.confidence_scatter(pairs, a, b, color), width="stretch", key="scatter",
                    on_select=pick_from_chart, selection_mode="pick")

    # --- the selected sample, right below the chart that selects it --------------------------------
    label = bundle.classes[bundle.labels[sample]]
    st.subheader(f"Sample #{sample} (true class {label})", anchor=DETAIL)
    sample = st.number_input("Sample index", 0, n - 1, step=1,
                             **state.bind("i", sample, state.number(0, n - 1, integer=True)))
    attack_eps = ctx.eps  # the detail always shows the sidebar's attack beside the clean image
    detail = cached.sample_detail(ctx, bundle, [a, b], attack_eps, int(sample))

    def picture(img, caption: str) -> None:
        with st.container(width=DETAIL_PX + 8, gap=None):
            st.image(img, width="content")
            st.caption(caption)

    with st.container(horizontal=True, gap="small"):  # wraps: three a line on a phone
        picture(charts.to_display(detail["clean"], DETAIL_PX), f"clean · true class {label}")
        for name in ([a, b] if attack_eps > 0 else []):
            adv = detail[name]
            if adv is None:  # no weights at hand (a zoo model in the hosted demo): the cached logits only
                st.caption(f"No attacked image for {display_name(name)}: {detail['missing'][name]}", width=230)
                continue
            picture(charts.to_display(adv.adversarial, DETAIL_PX),
                    f"attacked for {display_name(name)}: predicts {bundle.classes[int(adv.logits.argmax())]}")
            with st.container(width=DETAIL_PX + 8, gap=None):
                st.image(charts.perturbation_display(adv.perturbation, attack_eps, DETAIL_PX), width="content")
                st.image(charts_sample.perturbation_legend(DETAIL_PX, 8), width="content")
                scale = charts_sample.perturbation_scale(adv.perturbation, attack_eps)
                with st.container(horizontal=True, horizontal_alignment="distribute", width=DETAIL_PX, gap=None):
                    for tick in charts_sample.perturbation_ticks(scale):
                        st.caption(tick, width="content")
                st.caption(f"perturbation for {display_name(name)}, amplified: blue -, red +")
    if attack_eps == 0:
        st.caption("The sidebar's epsilon is 0: only the clean image and its logits. Raise epsilon in the sidebar "
                   "to see each model's attack.")
    else:
        st.caption(f"Each model is attacked on its own (PGD at epsilon {attack_eps:g}, the sidebar's, against that "
                   "model), so the two attacked images differ. Under each perturbation, its colour scale: the "
                   "change of a pixel, averaged over the channels.")
        if not all(detail[m].exact for m in (a, b) if detail[m] is not None):
            st.caption("The recomputed attack does not match the cached logits exactly (the cache came from another "
                       "code version or device, e.g. a GPU's larger batches); the bars show the cached logits.")
    panels = [(detail["clean_logits"], "Logits on the clean image", "no attack (epsilon 0)")]
    if detail["logits"] is not None:
        panels.append((detail["logits"], "Logits on the attacked image", f"PGD at epsilon {attack_eps:g}, the "
                                                                          "sidebar's, against each model"))
    domain = charts_sample.logit_domain(*(frame for frame, _, _ in panels))
    for col, (frame, title, subtitle) in zip(st.columns(len(panels)), panels):
        col.altair_chart(charts_sample.logit_panel(frame, [a, b], title, ctx.colors, domain, subtitle),
                         width="stretch")
    st.caption(f"{charts_sample.TRUE_CLASS_NOTE} Both panels share the logit scale.")

    # --- the samples the two models disagree on most -----------------------------------------------
    def image_row(rows, title: str, side: str) -> None:
        st.markdown(title)
        thumbs = cached.images(ctx.sel.dataset, tuple(int(i) for i in rows["idx"]), ctx.sel.data_dir)
        cls = bundle.classes
        with st.container(horizontal=True, gap="small"):  # wraps: several per row on a phone too
            for j, (_, r) in enumerate(rows.iterrows()):
                with st.container(width=THUMB + 24, gap=None):
                    st.image(charts.to_display(thumbs[j], THUMB), width="content")  # whole pixels: crisp
                    st.caption(f"#{r.idx} · true **{cls[r.label]}**  \nA: {cls[r.pred_a]} ({r.conf_a:.2f})  \n"
                               f"B: {cls[r.pred_b]} ({r.conf_b:.2f})")
                    st.button("Inspect", key=f"inspect.{side}.{j}", on_click=picked, args=(int(r.idx),))

    st.subheader(f"The largest confidence differences, {where(eps)}")
    st.caption(f"A is {name_a}, B is {name_b}. Under each image: its index, true class, and each model's "
               f"prediction with its confidence, {where(eps)}.")
    for rows, (more, less), side in ((a_more[a_more["diff"] > 0], (name_a + " (A)", name_b + " (B)"), "a"),
                                     (b_more[b_more["diff"] < 0], (name_b + " (B)", name_a + " (A)"), "b")):
        if rows.empty:
            st.markdown(f"**No test image where {more} is more confident than {less}**, {where(eps)}.")
        else:
            image_row(rows, f"**{more} more confident than {less}**, the largest differences {where(eps)}", side)
    st.download_button(f"Download the per-sample confidences {where(eps)} (CSV)",
                       lambda: pairs.to_csv(index=False).encode(),
                       file_name=f"logitscope-{a}-vs-{b}-eps{eps:g}.csv", mime="text/csv",
                       icon=":material/download:", on_click="ignore")
    if st.session_state.pop(SELECTED, False):  # last: the script's (empty) element moves nothing above it
        internals.scroll_into_view(DETAIL)
