"""Chart builders of the single-sample views and of the linear toy model. They return objects and draw nothing.

Beside `core.app.charts` (the page-wide distributions and maps): a sample's logits in titled panels
that share a scale (clean and attacked), the colour scale of a perturbation image, and the toy sweep
with the logit quantities and the accuracies on separate axes.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import altair as alt
import numpy as np
import pandas as pd

from core.app import charts

TRUE_CLASS_NOTE = "The outlined bar is the true class."
PANEL_HEIGHT = 320  # px, the whole panel: its legend below the bars takes about a third


def logit_domain(*samples: pd.DataFrame) -> tuple[float, float]:
    """A y range that holds every logit of the frames and zero, so panels drawn with it compare by eye."""
    lo = min(0.0, *(float(s["logit"].min()) for s in samples))
    hi = max(0.0, *(float(s["logit"].max()) for s in samples))
    pad = 0.05 * (hi - lo or 1.0)
    return lo - pad, hi + pad


def logit_panel(sample: pd.DataFrame, models: Sequence[str], title: str, colors: Mapping[str, str] | None = None,
                domain: tuple[float, float] | None = None, subtitle: str | None = None) -> alt.Chart:
    """`charts.logit_bars` (session colours, display names, true class outlined) under `title` and `subtitle`.

    sample: columns model, class, logit, role (core.app.samples.sample_logits). `domain` fixes the y
    range (`logit_domain` of both panels) so a clean and an attacked panel share one scale. The
    subtitle is a line of its own: a narrow screen cuts a long title short, not two short lines.
    """
    head = alt.TitleParams(title, subtitle=subtitle or alt.Undefined, anchor="start")
    chart = charts.logit_bars(sample, models, colors=colors).properties(title=head, height=PANEL_HEIGHT)
    if domain is not None:
        chart = chart.encode(y=alt.Y("logit:Q", title="logit", scale=alt.Scale(domain=list(domain))))
    return chart


# --- the colour scale of a perturbation ------------------------------------------------------------

def perturbation_scale(delta: np.ndarray, eps: float) -> float:
    """The change that `charts.perturbation_display` draws in full colour: eps, or the largest change if bigger."""
    d = np.asarray(delta, dtype=np.float32).mean(axis=0)
    return max(float(eps), float(np.abs(d).max()), 1e-12)


def perturbation_legend(width: int = 112, height: int = 10) -> np.ndarray:
    """The colour scale of `charts.perturbation_display` as a (height, width, 3) uint8 image.

    Left is -scale (full blue), the middle 0 (white), right +scale (full red): drawn by the same
    function as the perturbations, so the two cannot disagree.
    """
    ramp = np.tile(np.linspace(-1.0, 1.0, width, dtype=np.float32), (1, height, 1))  # (1, H, W)
    return charts.perturbation_display(ramp, 1.0, size=max(width, height))


def perturbation_ticks(scale: float) -> tuple[str, str, str]:
    """The legend's tick labels at its left end, middle and right end."""
    return f"−{scale:.3g}", "0", f"+{scale:.3g}"


# --- the linear toy model ------------------------------------------------------------------------

LOGIT_SERIES = {"mean_max_logit": "mean max logit", "mean_logit_gap": "mean logit gap"}
ACCURACY_SERIES = {"clean_accuracy": "clean", "robust_accuracy": "robust (at the training eps)"}  # the axis says accuracy


def _sweep_panel(sweep: pd.DataFrame, series: Mapping[str, str], y_title: str, eps_now: float,
                 scale: alt.Scale | None = None) -> alt.LayerChart:
    long = sweep.melt(id_vars="eps", value_vars=list(series), var_name="quantity")
    long["quantity"] = long["quantity"].map(series)
    lines = alt.Chart(long).mark_line(point=True).encode(
        x=alt.X("eps:Q", title="training epsilon (Linf)"),
        y=alt.Y("value:Q", title=y_title, scale=scale or alt.Undefined),
        color=alt.Color("quantity:N", title=None, sort=list(series.values()),
                        legend=alt.Legend(orient="top", labelLimit=300, direction="horizontal")),
        tooltip=[alt.Tooltip("quantity:N", title="quantity"), alt.Tooltip("eps:Q", format="g", title="training epsilon"),
                 alt.Tooltip("value:Q", format=".3f", title="value")])
    rule = alt.Chart(pd.DataFrame({"eps": [eps_now]})).mark_rule(color="#d62728", strokeDash=[5, 3]).encode(
        x=alt.X("eps:Q", title="training epsilon (Linf)"))
    return alt.layer(lines, rule).properties(height=240)


def toy_sweep_chart(sweep: pd.DataFrame, eps_now: float) -> tuple[alt.LayerChart, alt.LayerChart]:
    """Linear models trained at each eps: (their logits on clean inputs, their accuracies), two charts.

    sweep: core.app.toy.sweep (one row per training eps). Each chart has its own y axis and legend:
    logits are unbounded, accuracies lie in [0, 1], and only the logits are on clean inputs (the
    robust accuracy is under the worst-case perturbation at the training eps). Two charts, not one
    concatenated, so each takes its column's width.
    """
    return (_sweep_panel(sweep, LOGIT_SERIES, "logit (clean inputs)", eps_now),
            _sweep_panel(sweep, ACCURACY_SERIES, "accuracy", eps_now, alt.Scale(domain=[0, 1])))
