"""Why AT shrinks logits: a linear softmax model on 2-D data, trained live with and without attacks."""

import numpy as np
import streamlit as st

from core.app import charts
from pages import _cached as cached
from pages import _context as ui
from pages import _state as state

ui.sidebar(("teps", "sep", "noise", "classes"))
st.title("Why adversarial training shrinks logits")
st.markdown(
    "A model small enough to see through: **linear softmax regression**, logits $z = Wx + b$, on three "
    "Gaussian blobs in 2-D. Move epsilon and two models are trained on the spot: a standard one, and one "
    "trained against the worst-case $L_\\infty$ perturbation of size epsilon. (This page is self-contained: "
    "it ignores the sidebar.)")
with st.expander("The argument in four lines", expanded=True):
    st.markdown(
        "- A perturbation $\\delta$ with $\\|\\delta\\|_\\infty \\le \\varepsilon$ changes the margin between "
        "the true class $y$ and a class $j$, $z_y - z_j$, by $(w_y - w_j)\\cdot\\delta$, which is at least "
        "$-\\varepsilon\\,\\|w_y - w_j\\|_1$ (take $\\delta = -\\varepsilon\\,\\mathrm{sign}(w_y - w_j)$).\n"
        "- So adversarial training minimises the usual loss on margins shrunk by "
        "$\\varepsilon\\,\\|w_y - w_j\\|_1$: a penalty on the weight differences that grows with epsilon.\n"
        "- The same differences set every logit gap, $z_y - z_j = (w_y - w_j)\\cdot x + b_y - b_j$. Smaller "
        "weights mean smaller gaps and a smaller max logit on *every* input: less confident predictions.\n"
        "- A deep network is linear near each input, with the logit gradients in the role of $w_y - w_j$: "
        "AT flattens them, and its logits shrink the same way (finding 1).")

with ui.guard():
    c1, c2, c3, c4 = st.columns(4)
    eps = c1.slider("Training epsilon", 0.0, 1.5, step=0.05, **state.bind("teps", 0.5, state.number(0, 1.5)))
    sep = c2.slider("Class separation", 0.5, 4.0, step=0.25, **state.bind("sep", 2.0, state.number(0.5, 4)))
    noise = c3.slider("Noise", 0.3, 2.0, step=0.1, **state.bind("noise", 0.8, state.number(0.3, 2)))
    classes = c4.slider("Classes", 2, 6, step=1, **state.bind("classes", 3, state.number(2, 6, integer=True)))

    result = cached.toy_demo(int(classes), float(sep), float(noise), 0, float(eps))
    sweep = cached.toy_sweep(int(classes), float(sep), float(noise), 0, tuple(np.round(np.arange(0, 1.51, 0.1), 2)))
    stats = result.stats.set_index("model")
    m = st.columns(5)
    for col, field, label, fmt in ((m[0], "mean_max_logit", "Mean max logit", ".2f"),
                                   (m[1], "mean_logit_gap", "Mean logit gap", ".2f"),
                                   (m[2], "mean_confidence", "Mean confidence", ".3f"),
                                   (m[3], "clean_accuracy", "Clean accuracy", ".3f"),
                                   (m[4], "robust_accuracy", f"Accuracy at epsilon {eps:g}", ".3f")):
        std, adv = stats.loc["standard", field], stats.loc["adversarial", field]
        col.metric(f"{label} (AT)", format(adv, fmt), delta=format(adv - std, "+" + fmt),
                   delta_color="off", help=f"Standard model: {format(std, fmt)}. The delta is AT minus standard.")

    left, right = st.columns([2, 3])
    with left:
        st.markdown("**Logits of models trained at each epsilon** (clean inputs)")
        st.altair_chart(charts.toy_sweep_chart(sweep, eps), width="stretch")
    with right:
        q = st.radio("Distribution of", ["max_logit", "logit_gap"], horizontal=True,
                     format_func={"max_logit": "max logit", "logit_gap": "logit gap"}.get, key="w.toyq")
        st.altair_chart(charts.distribution_chart(cached.toy_histogram(result, q), q.replace("_", " "),
                                                  list(result.models)), width="stretch")
    st.markdown("**Decision regions** of both models, with the training data (shaded by predicted class).")
    st.altair_chart(charts.toy_regions_chart(result.regions(), result.x, result.y))
