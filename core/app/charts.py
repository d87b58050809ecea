"""Altair chart builders, image helpers and selection parsers. They return objects and draw nothing.

Every builder takes a tidy DataFrame from core.app.views / core.app.lab / core.app.toy and returns an
`alt.Chart`; pages hand it to `st.altair_chart`, whose action menu exports PNG and SVG. Colours of
models are fixed by their order in the selection (`model_scale`), so a model keeps its colour on
every page. Selection parsers turn the event a chart or table sends back into sample indices.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import altair as alt
import numpy as np
import pandas as pd

PALETTE = ("#4c78a8", "#e45756", "#54a24b", "#f58518", "#b279a2", "#72b7b2", "#9d755d", "#eeca3b",
           "#ff9da6", "#bab0ac")
CLASS_SCHEME = "category10"


def model_scale(models: Sequence[str]) -> alt.Scale:
    """One colour per model, in selection order, identical on every page."""
    models = list(dict.fromkeys(models))
    return alt.Scale(domain=models, range=[PALETTE[i % len(PALETTE)] for i in range(len(models))])


def model_color(models: Sequence[str], legend: bool = True) -> alt.Color:
    """The colour channel of a chart whose series are models (long names stay readable)."""
    return alt.Color("model:N", scale=model_scale(models), title="model",
                     legend=alt.Legend(labelLimit=360) if legend else None)


def _facet(chart: alt.Chart, groups: Sequence[str], columns: int = 5) -> alt.Chart | alt.FacetChart:
    if len(groups) <= 1:
        return chart
    return chart.properties(width=170 if len(groups) > 2 else 300, height=130 if len(groups) > 2 else 220) \
        .facet(facet=alt.Facet("group:N", title=None, sort=list(groups)), columns=columns)


def distribution_chart(hist: pd.DataFrame, quantity_label: str, models: Sequence[str]) -> alt.Chart:
    """Overlaid step densities per model (faceted by group when there are several groups).

    hist: columns model, group, start, end, count, density (core.engine.analysis.histogram).
    """
    base = alt.Chart(hist).encode(
        x=alt.X("start:Q", title=quantity_label),
        y=alt.Y("density:Q", title="density", stack=None),
        color=model_color(models),
        tooltip=[alt.Tooltip("model:N"), alt.Tooltip("group:N"), alt.Tooltip("start:Q", format=".3g", title="from"),
                 alt.Tooltip("end:Q", format=".3g", title="to"), alt.Tooltip("count:Q"),
                 alt.Tooltip("density:Q", format=".3g")],
    )
    chart = base.mark_area(interpolate="step-after", opacity=0.25) + \
        base.mark_line(interpolate="step-after", strokeWidth=2)
    groups = list(dict.fromkeys(hist["group"])) if len(hist) else []
    if len(groups) <= 1:
        return chart.properties(height=320)
    return _facet(chart, groups)


def accuracy_chart(curve: pd.DataFrame, eps_now: float | None, models: Sequence[str],
                   title: str = "accuracy under PGD") -> alt.LayerChart:
    """Accuracy versus epsilon, one line per model, with the current epsilon marked.

    curve: columns model, eps, accuracy.
    """
    base = alt.Chart(curve).encode(
        x=alt.X("eps:Q", title="epsilon"),
        y=alt.Y("accuracy:Q", title=title, scale=alt.Scale(domain=[0, 1])),
        color=model_color(models),
        tooltip=["model:N", alt.Tooltip("eps:Q", format="g"), alt.Tooltip("accuracy:Q", format=".3f")],
    )
    layers = [base.mark_line(strokeWidth=2), base.mark_point(filled=True, size=50)]
    if eps_now is not None:
        rule = alt.Chart(pd.DataFrame({"eps": [eps_now]})).mark_rule(color="#d62728", strokeDash=[5, 3],
                                                                     strokeWidth=2).encode(x="eps:Q")
        layers.append(rule)
    return alt.layer(*layers).properties(height=300)


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
    points = alt.Chart(data).mark_circle(size=45).encode(
        x=alt.X("conf_a:Q", title=f"confidence of {a} (A)", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("conf_b:Q", title=f"confidence of {b} (B)", scale=alt.Scale(domain=[0, 1])),
        color=color,
        opacity=alt.condition(pick, alt.value(0.85), alt.value(0.25)),
        size=alt.condition(pick, alt.value(60), alt.value(30)),
        tooltip=["idx:Q", "label:N", "pred_a:N", "pred_b:N", alt.Tooltip("conf_a:Q", format=".3f"),
                 alt.Tooltip("conf_b:Q", format=".3f"), alt.Tooltip("diff:Q", format="+.3f"), "outcome:N"],
    ).add_params(pick)
    diagonal = alt.Chart(pd.DataFrame({"x": [0, 1], "y": [0, 1]})).mark_line(
        color="#888", strokeDash=[4, 4]).encode(x="x:Q", y="y:Q")
    return alt.layer(diagonal, points).properties(height=420)


def logit_bars(sample: pd.DataFrame, models: Sequence[str]) -> alt.Chart:
    """One sample's logits per class, models side by side; the true class is outlined.

    sample: columns model, class, logit, role (core.app.views.sample_logits).
    """
    return alt.Chart(sample).mark_bar().encode(
        x=alt.X("class:N", title="class", sort=None, axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("model:N", sort=list(models)),
        y=alt.Y("logit:Q", title="logit"),
        color=model_color(models),
        stroke=alt.condition(alt.datum.role == "true class", alt.value("black"), alt.value(None)),
        strokeWidth=alt.condition(alt.datum.role == "true class", alt.value(2), alt.value(0)),
        tooltip=["model:N", "class:N", alt.Tooltip("logit:Q", format=".3f"), "role:N"],
    ).properties(height=260)


def embedding_chart(emb: pd.DataFrame, color_by: str, models: Sequence[str], param: str = "brush") -> alt.Chart:
    """The UMAP map: one point per (model, sample), shape by model; drag a rectangle to select.

    emb: core.app.embedding.compute_embedding. color_by: "label", "correct" or "confidence".
    """
    brush = alt.selection_interval(name=param, encodings=["x", "y"])
    if color_by == "confidence":
        color = alt.Color("confidence:Q", scale=alt.Scale(scheme="viridis", domain=[0, 1]), title="confidence")
    elif color_by == "correct":
        color = alt.Color("correct:N", scale=alt.Scale(domain=[True, False], range=["#54a24b", "#e45756"]),
                          title="correct")
    else:
        color = alt.Color("label:N", scale=alt.Scale(scheme=CLASS_SCHEME), title="true class")
    return alt.Chart(emb).mark_point(filled=True, size=35).encode(
        x=alt.X("x:Q", title="UMAP 1", axis=alt.Axis(labels=False, ticks=False)),
        y=alt.Y("y:Q", title="UMAP 2", axis=alt.Axis(labels=False, ticks=False)),
        color=alt.condition(brush, color, alt.value("#d0d0d0")),
        shape=alt.Shape("model:N", sort=list(models), title="model"),
        tooltip=["model:N", "idx:Q", "label:N", "pred:N", "correct:N", alt.Tooltip("confidence:Q", format=".3f")],
    ).add_params(brush).properties(height=520)


def agreement_chart(agreement: pd.DataFrame, models: Sequence[str]) -> alt.LayerChart:
    """Box plots (min-max whiskers, quartile box, median tick) of the per-sample order agreement.

    agreement: columns model, tau (Kendall tau of the incorrect classes' order against the teacher).
    Drawn from bars and ticks, which sit in the middle of their row whatever the theme.
    """
    q = agreement.groupby("model", sort=False)["tau"].quantile([0.0, 0.25, 0.5, 0.75, 1.0]).unstack()
    q.columns = ["min", "q25", "median", "q75", "max"]
    q = q.reset_index().assign(mean=agreement.groupby("model", sort=False)["tau"].mean().to_numpy())
    y = alt.Y("model:N", sort=list(models), title=None, axis=alt.Axis(labelLimit=400))
    x = alt.X("min:Q", title="Kendall tau of the incorrect classes' order vs the teacher",
              scale=alt.Scale(domain=[-1, 1]))
    tooltip = ["model:N"] + [alt.Tooltip(f"{c}:Q", format=".3f") for c in ("min", "q25", "median", "q75", "max",
                                                                            "mean")]
    base = alt.Chart(q).encode(y=y, tooltip=tooltip)
    whisker = base.mark_bar(size=2, color="#777").encode(x=x, x2="max:Q")
    box = base.mark_bar(size=18).encode(x="q25:Q", x2="q75:Q", color=model_color(models, legend=False))
    median = base.mark_tick(color="white", thickness=2, size=18).encode(x="median:Q")
    return alt.layer(whisker, box, median).properties(height=max(120, 44 * len(models)))


def interval_chart(frame: pd.DataFrame, title: str, models: Sequence[str] | None = None) -> alt.LayerChart:
    """Estimates with their interval as a bar, one row per run, its student and baselines side by side.

    frame: columns run, model, estimate, lo, hi (and attack, shown in the tooltip), e.g.
    `core.app.lab.interval_frame`; title names the quantity and its attack.
    """
    models = list(dict.fromkeys(models if models is not None else frame["model"]))
    runs = list(dict.fromkeys(frame["run"]))
    tooltip = ["run:N", "model:N", alt.Tooltip("estimate:Q", format=".3f"), alt.Tooltip("lo:Q", format=".3f"),
               alt.Tooltip("hi:Q", format=".3f")] + (["attack:N"] if "attack" in frame.columns else [])
    base = alt.Chart(frame).encode(y=alt.Y("run:N", sort=runs, title=None, axis=alt.Axis(labelLimit=400)),
                                   yOffset=alt.YOffset("model:N", sort=models), color=model_color(models),
                                   tooltip=tooltip)
    bars = base.mark_rule(strokeWidth=3).encode(x=alt.X("lo:Q", title=title, scale=alt.Scale(domain=[0, 1])),
                                                x2="hi:Q")
    points = base.mark_point(filled=True, size=70).encode(x="estimate:Q")
    return alt.layer(bars, points).properties(height=max(150, 22 * len(models) * len(runs)))


def toy_sweep_chart(sweep: pd.DataFrame, eps_now: float) -> alt.LayerChart:
    """Mean max logit and mean logit gap of linear models trained at each eps, current eps marked."""
    long = sweep.melt(id_vars="eps", value_vars=["mean_max_logit", "mean_logit_gap"], var_name="quantity")
    long["quantity"] = long["quantity"].map({"mean_max_logit": "mean max logit", "mean_logit_gap": "mean logit gap"})
    lines = alt.Chart(long).mark_line(point=True).encode(
        x=alt.X("eps:Q", title="training epsilon (Linf)"), y=alt.Y("value:Q", title="on clean inputs"),
        color=alt.Color("quantity:N", title=None), tooltip=["quantity:N", alt.Tooltip("eps:Q", format="g"),
                                                              alt.Tooltip("value:Q", format=".3f")])
    rule = alt.Chart(pd.DataFrame({"eps": [eps_now]})).mark_rule(color="#d62728", strokeDash=[5, 3]).encode(x="eps:Q")
    return alt.layer(lines, rule).properties(height=300)


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


def selected_rows(event: Any) -> list[int]:
    """Row positions a `st.dataframe(..., on_select="rerun")` selection holds."""
    rows = _get(_get(event, "selection"), "rows")
    return [int(r) for r in rows] if isinstance(rows, (list, tuple)) else []
