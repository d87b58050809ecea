"""Logit distributions: overlaid histograms of a logit statistic per model, scrubbed over epsilon."""

import streamlit as st

from core.app import charts
from core.app.views import GRADIENTS_FLAGGED, GRADIENTS_OK, NORM_LABELS, QUANTITY_LABELS, SPLITS
from pages import _cached as cached
from pages import _context as ui
from pages import _state as state

ctx = ui.sidebar(("q", "split"))
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
            st.badge(f"{n}: " + ("gradients ok" if e.gradients == GRADIENTS_OK else e.gradients),
                     color={GRADIENTS_OK: "green", GRADIENTS_FLAGGED: "orange"}.get(e.gradients, "gray"),
                     icon=":material/warning:" if e.gradients == GRADIENTS_FLAGGED else None,
                     help=reasons or ("The gradient-masking check: its attacks are not computed yet (the overview "
                                      "computes them)." if e.report is None else
                                      "The gradient-masking check found nothing: PGD, AutoAttack, margin-loss and "
                                      "unbounded PGD agree."))
    known = [f"{n} {found[n].reliable:.3f}" for n in models if found[n].reliable is not None]
    unknown = [n for n in models if found[n].reliable is None]
    reliable = (f" Robust accuracy under {ev.describe()}: {', '.join(known)}." if known else "")
    if unknown:
        reliable += f" AutoAttack is not computed yet for {', '.join(unknown)} (the overview page computes it)."
    st.caption(f"Distributions and accuracies on this page are under {NORM_LABELS[sel.norm]} PGD-{sel.steps} "
               f"(fast; its accuracies are an upper bound on robust accuracy).{reliable}")

    c1, c2 = st.columns([2, 3])
    quantity = c1.selectbox("Quantity", list(QUANTITY_LABELS), format_func=QUANTITY_LABELS.get,
                            **state.bind("q", "max_logit", state.choice(QUANTITY_LABELS)))
    split = c2.radio("Split by", list(SPLITS), format_func=SPLITS.get, horizontal=True,
                     **state.bind("split", "none", state.choice(SPLITS)))

    def render(eps: float) -> None:
        hist, summary = cached.distribution(key, eps, quantity, split, bundle, table)
        left, right = st.columns([3, 2])
        with left:
            st.markdown(f"**{QUANTITY_LABELS[quantity]}** at epsilon {eps:g}")
            st.altair_chart(charts.distribution_chart(hist, QUANTITY_LABELS[quantity], models), width="stretch")
        with right:
            st.markdown("**Accuracy under attack**")
            curve = cached.accuracy_curve(key, table)
            st.altair_chart(charts.accuracy_chart(curve, eps, models), width="stretch")
        st.markdown(f"**Summary statistics** of {QUANTITY_LABELS[quantity]} at epsilon {eps:g}; *KS* is the "
                    f"Kolmogorov-Smirnov distance to **{models[0]}** (0 = same distribution, 1 = no overlap).")
        ks = f"KS vs {models[0]}"
        shown = summary if split != "none" else summary.drop(columns="group")
        st.dataframe(shown.rename(columns={"ks": ks}), hide_index=True, width="stretch",
                     column_config={c: st.column_config.NumberColumn(format="%.3f")
                                    for c in ("mean", "std", "median", "q05", "q95", ks)})

    ui.eps_scrubber(ctx, render)
    st.download_button("Download per-sample statistics (CSV, every model and epsilon)",
                       lambda: table.to_csv(index=False).encode(),
                       file_name=f"logitscope-{ctx.sel.dataset}-per-sample.csv", mime="text/csv",
                       icon=":material/download:", on_click="ignore")
