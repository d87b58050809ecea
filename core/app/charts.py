"""Altair chart builders, image helpers and selection parsers. They return objects and draw nothing.

Every builder takes a tidy DataFrame from core.app.views / core.app.lab / core.app.toy and returns an
`alt.Chart`; pages hand it to `st.altair_chart`, whose action menu exports PNG and SVG. The charts
whose series are models live in `core.app.charts_models` (re-exported here): each model has the
session's colour and its display name on every page. Selection parsers turn the event a chart or table
sends back into sample indices.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import altair as alt
import numpy as np
import pandas as pd

from core.app.charts_models import (
    Colors,
    accuracy_chart,
    agreement_chart,
    display_names,
    distribution_chart,
    distribution_panels,
    interval_chart,
    legend_room,
    logit_bars,
    model_color,
    model_legend,
    model_scale,
    with_names,
)
from core.app.palette import display_name

__all__ = ["CLASS_SCHEME", "accuracy_chart", "agreement_chart", "confidence_scatter", "display_names",
           "distribution_chart", "distribution_panels", "embedding_chart", "interval_chart", "logit_bars",
           "model_color", "model_legend", "model_scale", "perturbation_display", "selected_bounds", "selected_index",
           "selected_points", "selected_rows", "thumbnails", "to_display", "toy_regions_chart"]

CLASS_SCHEME = "category10"
EMBEDDING_COLORS = {"label": "true class", "correct": "correctness", "confidence": "confidence", "model": "model"}


def confidence_scatter(pairs: pd.DataFrame, a: str, b: str, color_by: str = "label",
                       param: str = "pick") -> alt.LayerChart:
    """Per-sample confidence of model A (x) against model B (y); a click selects a sample.

    pairs: core.app.views.confidence_pairs. color_by: "label" (true class) or "outcome" (correctness).
    The selection parameter `param` carries the clicked sample's `idx`.
    """
    pick = alt.selection_point(name=param, fields=["idx"], on="click", clear="dblclick")
    data = pairs.assign(label=pairs["label"].astype(str))
    color = alt.Color("label:N", title="true class", scale=alt.Scale(scheme=CLASS_SCHEME)) if color_by == "label" \
        else alt.Color("outcome:N", title="outcome", scale=alt.Scale(
            domain=["both correct", "only A correct", "only B correct", "both wrong"],
            range=["#54a24b", "#4c78a8", "#f58518", "#e45756"]))
    name_a, name_b = display_name(a), display_name(b)
    points = alt.Chart(data).mark_circle(size=45).encode(
        x=alt.X("conf_a:Q", title=f"confidence of {name_a} (A)", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("conf_b:Q", title=f"confidence of {name_b} (B)", scale=alt.Scale(domain=[0, 1])),
        color=color,
        opacity=alt.condition(pick, alt.value(0.85), alt.value(0.25)),
        size=alt.condition(pick, alt.value(60), alt.value(30)),
        tooltip=[alt.Tooltip("idx:Q", title="sample"), alt.Tooltip("label:N", title="true class"),
                 alt.Tooltip("pred_a:N", title="prediction of A"), alt.Tooltip("pred_b:N", title="prediction of B"),
                 alt.Tooltip("conf_a:Q", format=".3f", title="confidence of A"),
                 alt.Tooltip("conf_b:Q", format=".3f", title="confidence of B"),
                 alt.Tooltip("diff:Q", format="+.3f", title="confidence of A minus B"),
                 alt.Tooltip("outcome:N", title="outcome")],
    ).add_params(pick)
    diagonal = alt.Chart(pd.DataFrame({"x": [0, 1], "y": [0, 1]})).mark_line(
        color="#888", strokeDash=[4, 4]).encode(x=alt.X("x:Q", title=f"confidence of {name_a} (A)"),
                                                y=alt.Y("y:Q", title=f"confidence of {name_b} (B)"))
    return alt.layer(diagonal, points).properties(height=420)


def embedding_chart(emb: pd.DataFrame, color_by: str, models: Sequence[str], param: str = "brush", *,
                    colors: Colors = None) -> alt.Chart:
    """The UMAP map: one point per (model, sample), shape by model; drag a rectangle to select.

    emb: core.app.embedding.compute_embedding. color_by: "label", "correct", "confidence" or "model"
    (the session's colour of each model, `colors`).
    """
    brush = alt.selection_interval(name=param, encodings=["x", "y"])
    if color_by == "confidence":
        color = alt.Color("confidence:Q", scale=alt.Scale(scheme="viridis", domain=[0, 1]), title="confidence")
    elif color_by == "correct":
        color = alt.Color("correct:N", scale=alt.Scale(domain=[True, False], range=["#54a24b", "#e45756"]),
                          title="correct")
    elif color_by == "model":
        color = model_color(models, colors)
    else:
        color = alt.Color("label:N", scale=alt.Scale(scheme=CLASS_SCHEME), title="true class")
    names = list(display_names(models).values())
    return alt.Chart(with_names(emb, models)).mark_point(filled=True, size=35).encode(
        x=alt.X("x:Q", title="UMAP 1", axis=alt.Axis(labels=False, ticks=False)),
        y=alt.Y("y:Q", title="UMAP 2", axis=alt.Axis(labels=False, ticks=False)),
        color=alt.condition(brush, color, alt.value("#d0d0d0")),
        shape=alt.Shape("name:N", sort=names, title="model", scale=alt.Scale(domain=names),
                        legend=None if color_by == "model" else alt.Legend(orient="bottom", direction="vertical")),
        tooltip=[alt.Tooltip("name:N", title="model"), alt.Tooltip("idx:Q", title="sample"),
                 alt.Tooltip("label:N", title="true class"), alt.Tooltip("pred:N", title="prediction"),
                 alt.Tooltip("correct:N", title="correct"),
                 alt.Tooltip("confidence:Q", format=".3f", title="confidence")],
    ).add_params(brush).properties(height=520 + legend_room(models))


def toy_regions_chart(regions: pd.DataFrame, x: np.ndarray, y: np.ndarray) -> alt.HConcatChart:
    """Decision regions of the standard and the adversarially trained linear models, with the data.

    regions: core.app.toy.ToyResult.regions (cells x0..x1, y0..y1 and the predicted class).
    """
    data = pd.DataFrame({"x": x[:, 0], "y": x[:, 1], "cls": y.astype(str)})
    color = alt.Color("cls:N", scale=alt.Scale(scheme=CLASS_SCHEME), title="class")
    panels = []
    for model in dict.fromkeys(regions["model"]):
        r = regions[regions["model"] == model].assign(cls=lambda d: d["pred"].astype(str))
        area = alt.Chart(r).mark_rect(opacity=0.25).encode(
            x=alt.X("x0:Q", title=None, scale=alt.Scale(nice=False, zero=False)), x2="x1:Q",
            y=alt.Y("y0:Q", title=None, scale=alt.Scale(nice=False, zero=False)), y2="y1:Q", color=color)
        pts = alt.Chart(data).mark_circle(size=14, opacity=0.85).encode(x="x:Q", y="y:Q", color=color)
        panels.append(alt.layer(area, pts).properties(title=f"{model} model", width=300, height=260))
    return alt.hconcat(*panels)


# --- images -------------------------------------------------------------------------------------

def to_display(img: np.ndarray, size: int = 112) -> np.ndarray:
    """An image (C, H, W) in [0, 1] as uint8 (S, S[, 3]), enlarged with square pixels."""
    img = np.asarray(img, dtype=np.float32)
    c, h, w = img.shape
    k = max(1, size // max(h, w))
    out = np.repeat(np.repeat(img, k, axis=1), k, axis=2)
    out = (np.clip(out, 0, 1) * 255).round().astype(np.uint8)
    return out[0] if c == 1 else out.transpose(1, 2, 0)


def perturbation_display(delta: np.ndarray, eps: float, size: int = 112) -> np.ndarray:
    """A perturbation (C, H, W) amplified to full colour: red up, blue down, white unchanged.

    The channels are averaged; +-eps (or the largest change, if bigger) maps to full red / blue.
    """
    d = np.asarray(delta, dtype=np.float32).mean(axis=0)
    scale = max(float(eps), float(np.abs(d).max()), 1e-12)
    t = np.clip(d / scale, -1, 1)
    rgb = np.ones(d.shape + (3,), dtype=np.float32)
    rgb[..., 1] -= np.abs(t)
    rgb[..., 2] -= np.clip(t, 0, 1)
    rgb[..., 0] -= np.clip(-t, 0, 1)
    return to_display(rgb.transpose(2, 0, 1), size)


def thumbnails(images: np.ndarray, size: int = 72) -> list[np.ndarray]:
    """Display versions of a batch of images (n, C, H, W)."""
    return [to_display(im, size) for im in images]


# --- selections -----------------------------------------------------------------------------------

def _get(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def selected_index(event: Any, param: str = "pick", field: str = "idx") -> int | None:
    """The sample index a point selection holds (the first if several), or None.

    event: what `st.altair_chart(..., on_select="rerun")` returns, {"selection": {param: [...]}}.
    """
    sel = _get(_get(event, "selection"), param)
    if isinstance(sel, Mapping) and field in sel:  # some renderers send {"idx": [12]}
        sel = [{field: v} for v in np.atleast_1d(sel[field])]
    if not isinstance(sel, (list, tuple)) or not sel:
        return None
    value = _get(sel[0], field)
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def selected_points(event: Any, frame: pd.DataFrame, param: str = "brush", x: str = "x",
                    y: str = "y") -> pd.DataFrame:
    """The rows of `frame` inside an interval selection ({x: [lo, hi], y: [lo, hi]}); empty if none."""
    sel = _get(_get(event, "selection"), param)
    if not isinstance(sel, Mapping) or not sel:
        return frame.iloc[0:0]
    mask = np.ones(len(frame), dtype=bool)
    for col in (x, y):
        bounds = sel.get(col)
        if bounds is None:
            continue
        try:
            lo, hi = sorted(float(v) for v in bounds)
        except (TypeError, ValueError):
            return frame.iloc[0:0]
        mask &= (frame[col].to_numpy() >= lo) & (frame[col].to_numpy() <= hi)
    return frame[mask]


def selected_bounds(event: Any, param: str = "brush", x: str = "x",
                    y: str = "y") -> tuple[float, float, float, float] | None:
    """(x0, x1, y0, y1) of an interval selection on both axes, each pair in order; None without one."""
    sel = _get(_get(event, "selection"), param)
    if not isinstance(sel, Mapping):
        return None
    try:
        (x0, x1), (y0, y1) = (sorted(float(v) for v in sel[c]) for c in (x, y))
    except (KeyError, TypeError, ValueError):
        return None
    return (x0, x1, y0, y1) if np.isfinite([x0, x1, y0, y1]).all() else None


def selected_rows(event: Any) -> list[int]:
    """Row positions a `st.dataframe(..., on_select="rerun")` selection holds."""
    rows = _get(_get(event, "selection"), "rows")
    return [int(r) for r in rows] if isinstance(rows, (list, tuple)) else []
