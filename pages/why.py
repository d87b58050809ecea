"""Why AT shrinks logits: a linear softmax model on 2-D data, trained live with and without attacks."""

import numpy as np
import streamlit as st

from core.app import charts, charts_sample
from pages import _cached as cached
from pages import _context as ui
from pages import _state as state

ui.page_only(("teps", "sep", "noise", "classes"))
st.title("Why adversarial training shrinks logits")
intro = st.empty()  # written once the sliders say how many classes there are
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
    sep = c2.slider("Class separation", 0.5, 4.0, step=0.25, **state.bind("sep", 2.0, state.number(0.5, 4)),
                    help="Distance of each class's mean from the origin (the means sit on a circle).")
    noise = c3.slider("Noise", 0.3, 2.0, step=0.1, **state.bind("noise", 0.8, state.number(0.3, 2)),
                      help="Standard deviation of each class's Gaussian.")
    classes = c4.slider("Classes", 2, 6, step=1, **state.bind("classes", 3, state.number(2, 6, integer=True)))
    intro.markdown(
        f"A model small enough to see through: **linear softmax regression**, logits $z = Wx + b$, on "
        f"**{int(classes)} Gaussian blobs** in 2-D (one per class; the sliders below set them). Move epsilon and two "
        "models are trained on the spot: a standard one, and one trained against the worst-case $L_\\infty$ "
        "perturbation of size epsilon.")

    result = cached.toy_demo(int(classes), float(sep), float(noise), 0, float(eps))
    sweep = cached.toy_sweep(int(classes), float(sep), float(noise), 0, tuple(np.round(np.arange(0, 1.51, 0.1), 2)))
    stats = result.stats.set_index("model")
    st.caption(f"The adversarially trained (AT) model at training epsilon {eps:g}, with its difference from the "
               "standard model: means over the training data, on clean inputs except the robust accuracy.")
    m = st.columns(5)
    for col, field, label, fmt, what in (
            (m[0], "mean_max_logit", "Max logit (AT)", ".2f", "Mean of the largest logit over clean inputs."),
            (m[1], "mean_logit_gap", "Logit gap (AT)", ".2f",
             "Mean gap between the largest and the second-largest logit, over clean inputs."),
            (m[2], "mean_confidence", "Confidence (AT)", ".3f", "Mean softmax probability of the predicted class."),
            (m[3], "clean_accuracy", "Clean acc. (AT)", ".3f", "Accuracy on clean inputs."),
            (m[4], "robust_accuracy", "Robust acc. (AT)", ".3f",
             f"Accuracy under the worst-case Linf perturbation of size {eps:g} (the training epsilon), exact for "
             "a linear model.")):
        std, adv = stats.loc["standard", field], stats.loc["adversarial", field]
        col.metric(label, format(adv, fmt), delta=format(adv - std, "+" + fmt), delta_color="off",
                   help=f"{what} Standard model: {format(std, fmt)}. The delta is AT minus standard.")
    if result.collapsed():
        chance = 1 / result.n_classes
        st.warning(
            f"The AT model has collapsed to a (nearly) constant prediction: its mean confidence is "
            f"{stats.loc['adversarial', 'mean_confidence']:.3f}, where chance is 1/{result.n_classes} = {chance:.3f} "
            f"(the standard model's: {stats.loc['standard', 'mean_confidence']:.3f}), and its clean accuracy is "
            f"{stats.loc['adversarial', 'clean_accuracy']:.3f}. A training epsilon of {eps:g} is about as large as "
            f"the class separation ({sep:g}) allows: a perturbation that size can push most points across a class "
            "boundary, so the most robust linear model shrinks its weights to almost nothing. Lower the training "
            "epsilon or raise the separation.", icon=":material/warning:")

    left, right = st.columns([2, 3])
    with left:
        st.markdown("**Models trained at each epsilon**: their logits on clean inputs, then their accuracies "
                    "(the dashed line marks the slider's training epsilon)")
        for chart in charts_sample.toy_sweep_chart(sweep, eps):
            st.altair_chart(chart, width="stretch")
    with right:
        q = st.radio("Distribution of", ["max_logit", "logit_gap"], horizontal=True,
                     format_func={"max_logit": "max logit", "logit_gap": "logit gap"}.get, key="w.toyq")
        st.altair_chart(charts.distribution_chart(cached.toy_histogram(result, q), q.replace("_", " ") +
                                                  " on clean inputs", list(result.models)), width="stretch")
    st.markdown("**Decision regions** of both models, with the training data (shaded by predicted class).")
    st.altair_chart(charts.toy_regions_chart(result.regions(), result.x, result.y))
