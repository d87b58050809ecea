"""Logit distributions: overlaid histograms of a logit statistic per model, scrubbed over epsilon."""

import streamlit as st

from core.app import charts
from core.app.palette import display_name
from core.app.views import GRADIENTS_FLAGGED, GRADIENTS_OK, NORM_LABELS, QUANTITY_LABELS, SPLITS
from pages import _cached as cached
from pages import _context as ui
from pages import _state as state

FACETS_PER_ROW = 5  # panels side by side on a wide screen; Streamlit stacks the columns on a phone

ctx = ui.sidebar(("q", "split"), eps_on_page=True)
st.title("Logit distributions")
st.markdown("Finding 1: adversarial training shrinks the **max logit** and the **logit gap**. Pick a quantity, "
            "then scrub epsilon (or press play) to watch the distributions move under attack. Every redraw reads "
            "logits that are already cached.")
with ui.guard():
    ui.need_models(ctx, 1)
    ui.require(ctx)
    key, bundle, table = cached.logit_set(ctx)
    models = list(ctx.sel.models)
    sel, ev, found = ctx.sel, ctx.sel.evidence(), cached.model_evidence(ctx, models)

    with st.container(horizontal=True):
        for n in models:
            e = found[n]
            reasons = " ".join(e.report.reasons) if e.report is not None and e.report.flagged else None
            st.badge(f"{display_name(n)}: " + ("gradients ok" if e.gradients == GRADIENTS_OK else e.gradients),
                     color={GRADIENTS_OK: "green", GRADIENTS_FLAGGED: "orange"}.get(e.gradients, "gray"),
                     icon=":material/warning:" if e.gradients == GRADIENTS_FLAGGED else None,
                     help=reasons or ("The gradient-masking check: its attacks are not computed yet (the overview "
                                      "computes them)." if e.report is None else
                                      "The gradient-masking check found nothing: PGD, AutoAttack, margin-loss and "
                                      "unbounded PGD agree."))
    known = [f"{display_name(n)} {found[n].reliable:.3f}" for n in models if found[n].reliable is not None]
    unknown = [display_name(n) for n in models if found[n].reliable is None]
    reliable = (f" Robust accuracy under {ev.describe()}: {', '.join(known)}." if known else "")
    if unknown:
        reliable += f" AutoAttack is not computed yet for {', '.join(unknown)} (the overview page computes it)."
    st.caption(f"Distributions and accuracies on this page are under {NORM_LABELS[sel.norm]} PGD-{sel.steps} "
               f"(fast; its accuracies are an upper bound on robust accuracy).{reliable}")
    ui.note_twins(ctx)

    c1, c2 = st.columns([2, 3])
    quantity = c1.selectbox("Quantity", list(QUANTITY_LABELS), format_func=QUANTITY_LABELS.get,
                            **state.bind("q", "max_logit", state.choice(QUANTITY_LABELS)))
    split = c2.radio("Split by", list(SPLITS), format_func=SPLITS.get, horizontal=True,
                     **state.bind("split", "none", state.choice(SPLITS)))

    def render(eps: float) -> None:
        label = QUANTITY_LABELS[quantity]
        hist, summary = cached.distribution(key, eps, quantity, split, bundle, table)
        whole = hist if split == "none" else cached.distribution(key, eps, quantity, "none", bundle, table)[0]
        left, right = st.columns([3, 2])
        with left:
            st.markdown(f"**{label}** at epsilon {eps:g}" + ("" if split == "none" else ", all samples"))
            st.altair_chart(charts.distribution_chart(whole, label, models, colors=ctx.colors), width="stretch")
        with right:
            st.markdown("**Accuracy under attack**")
            curve = cached.accuracy_curve(key, table)
            st.altair_chart(charts.accuracy_chart(curve, eps, models, colors=ctx.colors), width="stretch")
        if split != "none":
            facets(hist, label, eps)
        st.markdown(f"**Summary statistics** of {label} at epsilon {eps:g}; *KS* is the Kolmogorov-Smirnov "
                    f"distance to **{display_name(models[0])}** (0 = same distribution, 1 = no overlap).")
        ks = f"KS vs {display_name(models[0])}"
        shown = summary if split != "none" else summary.drop(columns="group")
        shown = shown.assign(model=shown["model"].map(display_name))
        st.dataframe(shown.rename(columns={"ks": ks}), hide_index=True, width="stretch",
                     column_config={c: st.column_config.NumberColumn(format="%.3f")
                                    for c in ("mean", "std", "median", "q05", "q95", ks)})

    def facets(hist, label: str, eps: float) -> None:
        """The split's small multiples, full width below the main row: the same axes in every panel, in
        group order, a few to a row (a phone stacks the columns, one panel a line)."""
        panels = charts.distribution_panels(hist, label, models, colors=ctx.colors)
        st.markdown(f"**{label} by {SPLITS[split]}** at epsilon {eps:g}: every panel has the same axes.")
        st.altair_chart(charts.model_legend(models, colors=ctx.colors), width="stretch")
        per_row = max(1, min(FACETS_PER_ROW, len(panels)))
        for start in range(0, len(panels), per_row):
            for col, (_, chart) in zip(st.columns(per_row), panels[start:start + per_row]):
                col.altair_chart(chart, width="stretch")

    ui.eps_scrubber(ctx, render)
    st.download_button("Download per-sample statistics of the selected models (CSV, every epsilon)",
                       lambda: table.to_csv(index=False).encode(),
                       file_name=f"logitscope-{ctx.sel.dataset}-per-sample.csv", mime="text/csv",
                       icon=":material/download:", on_click="ignore")
