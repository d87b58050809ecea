"""The linear softmax demo: the closed-form worst case, its gradient, and the shrinking logits."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from core.app import toy
from core.errors import LogitscopeError


def test_worst_case_margins_match_brute_force_over_the_ball_corners():
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((3, 2)), rng.standard_normal(3)
    x, y = rng.standard_normal((20, 2)), rng.integers(0, 3, 20)
    eps = 0.3
    worst = toy.worst_case_logits(w, b, x, y, eps)
    corners = np.array(list(itertools.product([-eps, eps], repeat=2)))  # a linear margin is extreme at a corner
    for i in range(len(x)):
        z = (x[i] + corners) @ w.T + b  # (4, K)
        for j in range(3):
            if j == y[i]:
                assert worst[i, j] == pytest.approx(x[i] @ w[j] + b[j])
                continue
            smallest_margin = (z[:, y[i]] - z[:, j]).min()
            assert worst[i, y[i]] - worst[i, j] == pytest.approx(smallest_margin)


def test_gradient_matches_finite_differences():
    spec = toy.ToySpec()
    x, y = toy.make_data(spec)
    rng = np.random.default_rng(1)
    w, b = rng.standard_normal((3, 2)), rng.standard_normal(3)
    loss, gw, gb = toy.loss_and_grad(w, b, x, y, 0.3, 1e-3)
    h = 1e-6
    for i, j in itertools.product(range(3), range(2)):
        w2 = w.copy()
        w2[i, j] += h
        assert (toy.loss_and_grad(w2, b, x, y, 0.3, 1e-3)[0] - loss) / h == pytest.approx(gw[i, j], abs=1e-4)
    for i in range(3):
        b2 = b.copy()
        b2[i] += h
        assert (toy.loss_and_grad(w, b2, x, y, 0.3, 1e-3)[0] - loss) / h == pytest.approx(gb[i], abs=1e-4)


def test_adversarial_training_shrinks_max_logit_and_gap_and_buys_robustness():
    result = toy.demo(toy.ToySpec(), 0.8)
    s = result.stats.set_index("model")
    assert s.loc["adversarial", "mean_max_logit"] < s.loc["standard", "mean_max_logit"] - 1
    assert s.loc["adversarial", "mean_logit_gap"] < s.loc["standard", "mean_logit_gap"] - 1
    assert s.loc["adversarial", "weight_l1"] < s.loc["standard", "weight_l1"]
    assert s.loc["adversarial", "robust_accuracy"] > s.loc["standard", "robust_accuracy"]
    for name in ("standard", "adversarial"):
        assert 0 <= s.loc[name, "robust_accuracy"] <= s.loc[name, "clean_accuracy"] <= 1


def test_sweep_shrinks_with_epsilon_and_eps_zero_is_the_standard_model():
    spec = toy.ToySpec()
    sweep = toy.sweep(spec, [0.0, 0.5, 1.0])
    assert list(sweep["eps"]) == [0.0, 0.5, 1.0]
    assert sweep["mean_max_logit"].is_monotonic_decreasing
    assert sweep["mean_logit_gap"].is_monotonic_decreasing
    std = toy.demo(spec, 0.0).stats.set_index("model")
    assert sweep.loc[0, "mean_max_logit"] == pytest.approx(std.loc["standard", "mean_max_logit"])


def test_per_sample_and_regions_shapes():
    result = toy.demo(toy.ToySpec(n_classes=4, n_per_class=20), 0.2)
    per = result.per_sample()
    assert len(per) == 2 * 80 and set(per["model"]) == {"standard", "adversarial"}
    assert (per["logit_gap"] >= 0).all()
    hist = result.histogram("max_logit", bins=12)
    assert len(hist) == 2 * 12 and hist.groupby("model", observed=True)["count"].sum().tolist() == [80, 80]
    regions = result.regions(n=10)
    assert len(regions) == 2 * 100
    assert (regions["x1"] > regions["x0"]).all() and set(regions["pred"]) <= set(range(4))


def test_bad_settings_raise_a_user_error():
    with pytest.raises(LogitscopeError, match="classes"):
        toy.ToySpec(n_classes=1)
    with pytest.raises(LogitscopeError, match="separation"):
        toy.ToySpec(separation=float("nan"))
    x, y = toy.make_data(toy.ToySpec(n_per_class=5))
    with pytest.raises(LogitscopeError, match="epsilon"):
        toy.train_linear(x, y, -1.0, toy.ToySpec())


def test_training_is_deterministic_for_a_seed():
    spec = toy.ToySpec(n_per_class=30)
    x, y = toy.make_data(spec)
    w1, b1 = toy.train_linear(x, y, 0.3, spec)
    w2, b2 = toy.train_linear(x, y, 0.3, spec)
    assert np.array_equal(w1, w2) and np.array_equal(b1, b2)


def test_a_collapsed_at_model_is_detected_and_a_healthy_one_is_not():
    """eps 1 at separation 1: the best robust linear model is (nearly) constant, its confidence at chance."""
    collapsed = toy.demo(toy.ToySpec(separation=1.0), 1.0)
    s = collapsed.stats.set_index("model")
    assert collapsed.n_classes == 3 and collapsed.collapsed()
    assert s.loc["adversarial", "mean_confidence"] < 1 / 3 + 0.02 < s.loc["standard", "mean_confidence"]
    assert s.loc["adversarial", "weight_l1"] < 0.05 * s.loc["standard", "weight_l1"]
    for spec, eps in ((toy.ToySpec(), 0.5), (toy.ToySpec(), 0.0), (toy.ToySpec(separation=1.0), 0.3),
                      (toy.ToySpec(separation=0.5, noise=2.0), 0.0)):  # the last: a weak standard model, no AT
        assert not toy.demo(spec, eps).collapsed(), (spec, eps)
