"""Altair builders of charts whose series are models: one colour and one readable name per model.

A model's colour comes from the session's assignment (`colors`, the pages' `ctx.colors`, built by
`core.app.palette.assign` over the whole catalog), so it is the same on every chart whatever else the
chart shows; without it, `palette.colors_for` (the default study's models keep their fixed colours).
Legends and tooltips show `palette.display_name`, never the internal key, and every tooltip field has
a title people can read. Builders return objects and draw nothing; `core.app.charts` re-exports them.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import altair as alt
import pandas as pd

from core.app import palette

Colors = Mapping[str, str] | None
LEGEND_LABEL_LIMIT = 320  # px: a long name stays readable and still fits a phone's width (390 px)


def display_names(models: Sequence[str]) -> dict[str, str]:
    """Each model's name on screen (`palette.display_name`), made unique: a clash gets its key appended."""
    models = list(dict.fromkeys(models))
    shown = [palette.display_name(m) for m in models]
    return {m: (s if shown.count(s) == 1 else f"{s} [{m}]") for m, s in zip(models, shown)}


def with_names(frame: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    """`frame` with a `name` column: the display name of its `model` (the field legends and tooltips use)."""
    names = display_names(models)
    return frame.assign(name=[names.get(m) or palette.display_name(m) for m in frame["model"].astype(str)])


def model_scale(models: Sequence[str], colors: Colors = None) -> alt.Scale:
    """Display names -> each model's session colour (the same model has the same colour on every chart)."""
    models = list(dict.fromkeys(models))
    return alt.Scale(domain=list(display_names(models).values()), range=palette.colors_for(models, colors))


def model_color(models: Sequence[str], colors: Colors = None, legend: bool = True) -> alt.Color:
    """The colour channel of a chart whose series are models, on the `name` field of `with_names`.

    The legend sits below the plot, one name a line, so the plot keeps its width on a narrow screen.
    """
    legend_ = alt.Legend(orient="bottom", direction="vertical", labelLimit=LEGEND_LABEL_LIMIT) if legend else None
    return alt.Color("name:N", scale=model_scale(models, colors), title="model",
                     sort=list(display_names(models).values()), legend=legend_)


def legend_room(models: Sequence[str]) -> int:
    """Pixels a legend below the plot takes (its title and one line a model), added to a chart's height:
    Streamlit fits the whole chart, legend included, into the height it is given."""
    return 40 + 30 * len(dict.fromkeys(models))


def _model_tip() -> alt.Tooltip:
    return alt.Tooltip("name:N", title="model")


def model_legend(models: Sequence[str], colors: Colors = None) -> alt.LayerChart:
    """A legend on its own (a coloured square and the display name per model), for a block of small charts."""
    names = display_names(models)
    data = pd.DataFrame({"model": list(names), "name": list(names.values())})
    y = alt.Y("name:N", sort=list(names.values()), axis=None)
    squares = alt.Chart(data).mark_square(size=140).encode(
        x=alt.value(8), y=y, color=alt.Color("name:N", scale=model_scale(models, colors), legend=None),
        tooltip=[_model_tip()])
    labels = alt.Chart(data).mark_text(align="left", baseline="middle", fontSize=13, limit=LEGEND_LABEL_LIMIT).encode(
        x=alt.value(20), y=y, text="name:N")
    return alt.layer(squares, labels).properties(height=alt.Step(26), title="model")  # 26 px a model


# --- histograms -----------------------------------------------------------------------------------

def _closed(hist: pd.DataFrame) -> pd.DataFrame:
    """The bins plus, per (model, group), a closing point at the last bin's end, so a step line draws it whole.

    `x` is where a row is drawn (a bin's start, or the last bin's end); a closing row keeps the last bin's
    numbers and has `closing` set, so the tooltip bars leave it out.
    """
    last = hist.groupby(["model", "group"], sort=False, observed=True).tail(1)
    return pd.concat([hist.assign(x=hist["start"], closing=False), last.assign(x=last["end"], closing=True)],
                     ignore_index=True)


def _span(hist: pd.DataFrame) -> tuple[float, float]:
    """From the first bin's start to the last bin's end: every value of the histogram is inside."""
    return (float(hist["start"].min()), float(hist["end"].max())) if len(hist) else (0.0, 1.0)


def _histogram(hist: pd.DataFrame, quantity_label: str, models: Sequence[str], colors: Colors, legend: bool,
               x_domain: tuple[float, float] | None = None, y_max: float | None = None) -> alt.LayerChart:
    """Overlaid step densities on an x axis that spans the edges exactly (every value is inside them)."""
    lo, hi = x_domain or _span(hist)
    base = alt.Chart(with_names(_closed(hist), models)).encode(
        x=alt.X("x:Q", title=quantity_label, scale=alt.Scale(domain=[lo, hi], nice=False, zero=False)),
        y=alt.Y("density:Q", title="density", stack=None,
                scale=alt.Scale(domain=[0, y_max]) if y_max else alt.Scale(domainMin=0)),
        color=model_color(models, colors, legend))
    area = base.mark_area(interpolate="step-after", opacity=0.25)
    line = base.mark_line(interpolate="step-after", strokeWidth=2)
    # one transparent bar per bin carries the tooltip (a line or an area has one tooltip for its whole path)
    tips = base.transform_filter("!datum.closing").mark_bar(opacity=0).encode(
        x=alt.X("start:Q", title=quantity_label), x2="end:Q",  # the same title, or Vega-Lite joins both
        tooltip=[_model_tip(), alt.Tooltip("group:N", title="group"),
                 alt.Tooltip("start:Q", format=".3g", title="from"), alt.Tooltip("end:Q", format=".3g", title="to"),
                 alt.Tooltip("count:Q", title="values in the bin"),
                 alt.Tooltip("density:Q", format=".3g", title="density")])
    return alt.layer(area, line, tips)


def _groups(hist: pd.DataFrame) -> list[str]:
    return [str(g) for g in dict.fromkeys(hist["group"])] if len(hist) else []


def distribution_chart(hist: pd.DataFrame, quantity_label: str, models: Sequence[str], *,
                       colors: Colors = None) -> alt.LayerChart | alt.FacetChart:
    """Overlaid step densities per model; several groups become small multiples with shared axes.

    hist: columns model, group, start, end, count, density (core.engine.analysis.histogram), groups in
    the order to show. Pages with a split lay out `distribution_panels` instead (they wrap on a phone).
    """
    groups = _groups(hist)
    if len(groups) <= 1:
        return _histogram(hist, quantity_label, models, colors, legend=True).properties(
            height=300 + legend_room(models))
    return _histogram(hist, quantity_label, models, colors, legend=True).properties(width=150, height=120).facet(
        facet=alt.Facet("group:N", title=None, sort=groups), columns=min(5, len(groups)),
    ).resolve_scale(x="shared", y="shared")


def distribution_panels(hist: pd.DataFrame, quantity_label: str, models: Sequence[str], *,
                        colors: Colors = None, height: int = 220) -> list[tuple[str, alt.LayerChart]]:
    """One small chart per group, in the histogram's group order, all on the same x and y scales.

    For a page to lay out in responsive columns (each drawn at the column's width); the legend is
    `model_legend`, shown once beside them.
    """
    y_max = float(hist["density"].max()) * 1.05 if len(hist) and hist["density"].max() > 0 else None
    return [(g, _histogram(hist[hist["group"].astype(str) == g], quantity_label, models, colors, legend=False,
                           x_domain=_span(hist), y_max=y_max).properties(height=height, title=g))
            for g in _groups(hist)]


# --- other charts of models -----------------------------------------------------------------------

def accuracy_chart(curve: pd.DataFrame, eps_now: float | None, models: Sequence[str],
                   title: str = "accuracy under PGD", *, colors: Colors = None) -> alt.LayerChart:
    """Accuracy versus epsilon, one line per model, with the current epsilon marked.

    curve: columns model, eps, accuracy.
    """
    base = alt.Chart(with_names(curve, models)).encode(
        x=alt.X("eps:Q", title="epsilon"),
        y=alt.Y("accuracy:Q", title=title, scale=alt.Scale(domain=[0, 1])),
        color=model_color(models, colors),
        tooltip=[_model_tip(), alt.Tooltip("eps:Q", format="g", title="epsilon"),
                 alt.Tooltip("accuracy:Q", format=".3f", title="accuracy")],
    )
    layers = [base.mark_line(strokeWidth=2), base.mark_point(filled=True, size=50)]
    if eps_now is not None:
        rule = alt.Chart(pd.DataFrame({"eps": [eps_now]})).mark_rule(color="#d62728", strokeDash=[5, 3],
                                                                     strokeWidth=2).encode(
            x=alt.X("eps:Q", title="epsilon"), tooltip=[alt.Tooltip("eps:Q", format="g", title="current epsilon")])
        layers.append(rule)
    return alt.layer(*layers).properties(height=280 + legend_room(models))


def logit_bars(sample: pd.DataFrame, models: Sequence[str], *, colors: Colors = None) -> alt.Chart:
    """One sample's logits per class, models side by side; the true class is outlined.

    sample: columns model, class, logit, role (core.app.samples.sample_logits).
    """
    return alt.Chart(with_names(sample, models)).mark_bar().encode(
        x=alt.X("class:N", title="class", sort=None, axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("name:N", sort=list(display_names(models).values())),
        y=alt.Y("logit:Q", title="logit"),
        color=model_color(models, colors),
        stroke=alt.condition(alt.datum.role == "true class", alt.value("black"), alt.value(None)),
        strokeWidth=alt.condition(alt.datum.role == "true class", alt.value(2), alt.value(0)),
        tooltip=[_model_tip(), alt.Tooltip("class:N", title="class"), alt.Tooltip("logit:Q", format=".3f",
                                                                                   title="logit"),
                 alt.Tooltip("role:N", title="role")],
    ).properties(height=260 + legend_room(models))


def agreement_chart(agreement: pd.DataFrame, models: Sequence[str], *, colors: Colors = None) -> alt.LayerChart:
    """Box plots (min-max whiskers, quartile box, median tick) of the per-sample order agreement.

    agreement: columns model, tau (Kendall tau of the incorrect classes' order against the teacher).
    Drawn from bars and ticks, which sit in the middle of their row whatever the theme.
    """
    q = agreement.groupby("model", sort=False)["tau"].quantile([0.0, 0.25, 0.5, 0.75, 1.0]).unstack()
    q.columns = ["min", "q25", "median", "q75", "max"]
    q = q.reset_index().assign(mean=agreement.groupby("model", sort=False)["tau"].mean().to_numpy())
    y = alt.Y("name:N", sort=list(display_names(models).values()), title=None, axis=alt.Axis(labelLimit=400))
    x = alt.X("min:Q", title="Kendall tau of the incorrect classes' order vs the teacher",
              scale=alt.Scale(domain=[-1, 1]))
    titles = {"min": "min", "q25": "lower quartile", "median": "median", "q75": "upper quartile", "max": "max",
              "mean": "mean"}
    tooltip = [_model_tip()] + [alt.Tooltip(f"{c}:Q", format=".3f", title=t) for c, t in titles.items()]
    base = alt.Chart(with_names(q, models)).encode(y=y, tooltip=tooltip)
    whisker = base.mark_bar(size=2, color="#777").encode(x=x, x2="max:Q")
    box = base.mark_bar(size=18).encode(x="q25:Q", x2="q75:Q", color=model_color(models, colors, legend=False))
    median = base.mark_tick(color="white", thickness=2, size=18).encode(x="median:Q")
    return alt.layer(whisker, box, median).properties(height=max(120, 44 * len(models)))


def interval_chart(frame: pd.DataFrame, title: str, models: Sequence[str] | None = None, *,
                   colors: Colors = None) -> alt.LayerChart:
    """Estimates with their interval as a bar, one row per run, its student and baselines side by side.

    frame: columns run, model, estimate, lo, hi (and attack, shown in the tooltip), e.g.
    `core.app.lab.interval_frame`; title names the quantity and its attack.
    """
    models = list(dict.fromkeys(models if models is not None else frame["model"]))
    runs = list(dict.fromkeys(frame["run"]))
    tooltip = [alt.Tooltip("run:N", title="run"), _model_tip(),
               alt.Tooltip("estimate:Q", format=".3f", title="estimate"),
               alt.Tooltip("lo:Q", format=".3f", title="interval from"),
               alt.Tooltip("hi:Q", format=".3f", title="interval to")]
    tooltip += [alt.Tooltip("attack:N", title="attack")] if "attack" in frame.columns else []
    base = alt.Chart(with_names(frame, models)).encode(
        y=alt.Y("run:N", sort=runs, title=None, axis=alt.Axis(labelLimit=180)),  # leaves a phone a plot
        yOffset=alt.YOffset("name:N", sort=list(display_names(models).values())),
        color=model_color(models, colors), tooltip=tooltip)
    lines = title.split(" (", 1)  # "robust accuracy", "(AutoAttack @0.1)": two short lines fit a phone
    title_ = [lines[0], "(" + lines[1]] if len(lines) == 2 else title
    bars = base.mark_rule(strokeWidth=3).encode(x=alt.X("lo:Q", title=title_, scale=alt.Scale(domain=[0, 1])),
                                                x2="hi:Q")
    points = base.mark_point(filled=True, size=70).encode(x="estimate:Q")
    return alt.layer(bars, points).properties(height=max(150, 22 * len(models) * len(runs)) + legend_room(models))
