"""The single-sample and toy chart builders (core.app.charts_sample), as functions: AppTest cannot see charts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from core.app import charts, charts_sample, toy


def _spec(chart) -> dict:
    return json.loads(chart.to_json())  # validates against the Vega-Lite schema


def _sample(shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({"model": ["standard"] * 2 + ["pgd-at"] * 2, "class": ["0", "1"] * 2,
                         "logit": np.array([3.0, -1.0, 1.0, 0.5]) + shift, "role": ["true class", "other"] * 2})


def test_logit_panels_are_titled_share_one_scale_and_use_the_session_colours():
    clean, attacked = _sample(), _sample(-5.0)
    domain = charts_sample.logit_domain(clean, attacked)
    assert domain[0] < -6.0 and domain[1] > 3.0  # every logit of both panels, and zero
    colors = {"standard": "#111111", "pgd-at": "#222222"}
    spec = _spec(charts_sample.logit_panel(attacked, ["standard", "pgd-at"], "Logits on the attacked image", colors,
                                           domain, "PGD at epsilon 0.1"))
    assert (spec["title"]["text"], spec["title"]["subtitle"]) == ("Logits on the attacked image", "PGD at epsilon 0.1")
    assert spec["encoding"]["y"]["scale"]["domain"] == list(domain)
    assert spec["encoding"]["color"]["scale"] == {"domain": ["Standard", "PGD-AT"], "range": ["#111111", "#222222"]}
    assert "true class" in json.dumps(spec["encoding"]["stroke"])


def test_the_perturbation_legend_has_the_perturbations_own_colours():
    legend = charts_sample.perturbation_legend(112, 10)
    assert legend.shape == (10, 112, 3) and legend.dtype == np.uint8
    delta = np.zeros((3, 4, 4), dtype=np.float32)
    delta[:, 0, 0], delta[:, 0, 1] = -0.1, 0.1
    shown = charts.perturbation_display(delta, 0.1, 4)
    assert (legend[0, 0] == shown[0, 0]).all() and (legend[0, -1] == shown[0, 1]).all()  # -eps blue, +eps red
    assert tuple(legend[0, 0]) == (0, 0, 255) and tuple(legend[0, -1]) == (255, 0, 0)
    assert tuple(legend[0, 56]) >= (240, 240, 240)  # white in the middle
    assert charts_sample.perturbation_scale(delta, 0.1) == np.float32(0.1)
    assert charts_sample.perturbation_scale(delta * 3, 0.1) > 0.29  # a larger change sets the scale, as drawn
    assert charts_sample.perturbation_ticks(0.1) == ("−0.1", "0", "+0.1")


def test_the_toy_sweep_puts_logits_and_accuracies_on_their_own_labelled_axes():
    """The defect: one axis titled "on clean inputs" held the accuracies too, the robust one under attack."""
    sweep = toy.sweep(toy.ToySpec(n_per_class=10, steps=20), [0.0, 0.3])
    logits, accuracy = (_spec(c) for c in charts_sample.toy_sweep_chart(sweep, 0.3))
    assert logits["layer"][0]["encoding"]["y"]["title"] == "logit (clean inputs)"
    assert accuracy["layer"][0]["encoding"]["y"]["title"] == "accuracy"
    assert accuracy["layer"][0]["encoding"]["y"]["scale"]["domain"] == [0, 1]

    def series(spec):
        return {row["quantity"] for rows in spec["datasets"].values() for row in rows if "quantity" in row}
    assert series(logits) == {"mean max logit", "mean logit gap"}
    assert series(accuracy) == {"clean", "robust (at the training eps)"}
