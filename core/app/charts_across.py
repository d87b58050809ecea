"""The "Across models" chart: one point per model, its intervals as error bars, and the trend across models.

x is a statistic of the model's clean logits, y its robust accuracy; the shape says which attack made y
(a filled circle: AutoAttack; an open diamond: PGD, an upper bound), the colour the model's method or
source, the size its training epsilon. A click selects a model (the selection parameter carries its
`name`). Colours come from `core.app.palette`: a method has the colour of its default-study model.
"""

from __future__ import annotations

from typing import Sequence

import altair as alt
import pandas as pd

from core.app import palette
from core.app.across import METHODS
from core.study.census import SOURCES

LEGEND = {"orient": "bottom", "direction": "vertical", "labelLimit": 300}  # below the plot: a phone keeps its width
_P = palette.PALETTE
METHOD_COLORS = dict(zip(METHODS, (_P[0], _P[1], _P[2], _P[11], _P[3], _P[10])))  # standard, PGD-AT, TRADES as ever
SOURCE_COLORS = dict(zip(SOURCES, (_P[0], _P[3], _P[10], _P[9])))
PLOT_HEIGHT = 400  # px of the plot itself, the legends below it not counted
ATTACK_SHAPES = {"AutoAttack (standard)": "circle", "AutoAttack (fast)": "circle"}  # PGD: "diamond"


def _scale(color_by: str, present: Sequence[str]) -> alt.Scale:
    """Method or source -> its colour; the domain holds the values present (the legend lists no absent one)."""
    colors = METHOD_COLORS if color_by == "method" else SOURCE_COLORS
    domain = [k for k in colors if k in set(present)] or list(colors)
    return alt.Scale(domain=domain, range=[colors[k] for k in domain])


def _shape(attacks: Sequence[str]) -> alt.Shape:
    domain = list(dict.fromkeys(attacks))
    return alt.Shape("attack:N", title="robust accuracy by", scale=alt.Scale(
        domain=domain, range=[ATTACK_SHAPES.get(a, "diamond") for a in domain]),
        legend=None)  # a third legend would not fit beside the others on a phone: the y title and caption say it


def across_chart(points: pd.DataFrame, line: pd.DataFrame, x_title: str | list[str], y_title: str | list[str],
                 color_by: str = "method", param: str = "pick", picked: str | None = None) -> alt.LayerChart:
    """The scatter of models with x and y error bars (95% intervals over test images) and the trend line.

    points: core.app.across.points; line: core.app.across.trend_line (two points, or empty); `picked`: the
    model drawn ringed (the page's selection).
    """
    pick = alt.selection_point(name=param, fields=["name"], on="click", clear="dblclick")
    x = alt.X("x:Q", title=x_title, scale=alt.Scale(zero=False, nice=True))
    y = alt.Y("y:Q", title=y_title, scale=alt.Scale(zero=False, nice=True))
    tooltip = [alt.Tooltip("model:N", title="model"), alt.Tooltip("method:N", title="method"),
               alt.Tooltip("source:N", title="source"), alt.Tooltip("train_eps_text:N", title="training eps"),
               alt.Tooltip("seed_text:N", title="seed"), alt.Tooltip("arch_text:N", title="architecture"),
               alt.Tooltip("x_text:N", title=f"x: {_first(x_title)}"),
               alt.Tooltip("y_text:N", title=f"y: {_first(y_title)}"),
               alt.Tooltip("robust_attack:N", title="attack of y")]
    base = alt.Chart(points).encode(tooltip=tooltip)
    scale = _scale(color_by, points[color_by].tolist())
    color = alt.Color(f"{color_by}:N", title=color_by, scale=scale, legend=alt.Legend(**LEGEND))
    y_bars = base.mark_rule(opacity=0.6).encode(x=x, y=alt.Y("y_lo:Q"), y2="y_hi:Q", color=color)
    x_bars = base.mark_rule(opacity=0.6).encode(x=alt.X("x_lo:Q"), x2="x_hi:Q", y=y, color=color)
    sizes = sorted(set(points["size_eps"].round(6)))
    size = alt.Size("size_eps:Q", title="training eps", scale=alt.Scale(range=[90, 420], zero=True),
                    legend=alt.Legend(**LEGEND, **({"values": sizes[:8]} if len(sizes) > 1 else {})))
    stroke = alt.Stroke(f"{color_by}:N", scale=scale, legend=None)
    open_ = alt.condition("indexof(datum.attack, 'upper bound') >= 0", alt.value(0.0), alt.value(0.85))
    dots = base.mark_point(filled=True, strokeWidth=2).encode(
        x=x, y=y, color=color, stroke=stroke, fillOpacity=open_, size=size,
        shape=_shape(points["attack"].tolist())).add_params(pick)
    layers = [y_bars, x_bars, dots]
    if picked is not None and picked in set(points["name"]):
        ring = alt.Chart(points[points["name"] == picked]).mark_point(
            size=700, color="black", strokeWidth=2, filled=False).encode(x=x, y=y, tooltip=tooltip)
        layers.append(ring)
    if len(line) == 2:
        trend = alt.Chart(line).mark_line(color="#555", strokeDash=[6, 4]).encode(x=alt.X("x:Q"), y=alt.Y("y:Q"))
        layers.insert(0, trend)
    return alt.layer(*layers).properties(height=PLOT_HEIGHT + legend_room(points, color_by))


def _first(title: str | list[str]) -> str:
    return title if isinstance(title, str) else title[0]


def legend_room(points: pd.DataFrame, color_by: str) -> int:
    """Pixels the legends below the plot take (side by side: the longest one counts; the size legend has about
    an entry per training eps, up to 8, of up to 20 px), added to the chart's height: Streamlit fits the legends
    into that height."""
    entries = max(len(set(points[color_by])), min(len(set(points["size_eps"].round(6))), 8), 5)
    return 60 + 26 * entries
