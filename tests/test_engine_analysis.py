"""Statistics of logits against hand-computed values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from core.engine import analysis

# Three samples, three classes. Row 0: correct, confident. Row 1: misclassified (true class 0 has the
# lowest logit). Row 2: all equal (maximal entropy).
LOGITS = np.array([[2.0, 1.0, 0.0],
                   [0.0, 3.0, 1.0],
                   [1.0, 1.0, 1.0]])
LABELS = np.array([0, 0, 0])


def _soft(row):
    e = np.exp(np.asarray(row) - max(row))
    return e / e.sum()


def test_per_sample_hand_computed():
    t = analysis.per_sample(LOGITS, LABELS)
    assert list(t.columns) == ["label", "pred", "correct", "max_logit", "logit_gap", "margin", "confidence",
                               "entropy"]
    assert t.label.tolist() == [0, 0, 0]
    assert t.pred.tolist() == [0, 1, 0]
    assert t.correct.tolist() == [True, False, True]
    assert t.max_logit.tolist() == [2.0, 3.0, 1.0]
    assert t.logit_gap.tolist() == [1.0, 2.0, 0.0]
    assert t.margin.tolist() == [1.0, -3.0, 0.0]  # true minus best other: negative when misclassified
    e = math.e
    assert t.confidence.tolist() == pytest.approx([e**2 / (e**2 + e + 1), e**3 / (e**3 + e + 1), 1 / 3])
    p0 = np.array([e**2, e, 1]) / (e**2 + e + 1)
    assert t.entropy[0] == pytest.approx(-(p0 * np.log(p0)).sum())
    assert t.entropy[2] == pytest.approx(math.log(3))


def test_per_sample_accepts_tensors_and_is_shift_invariant_where_it_should_be():
    t_np = analysis.per_sample(LOGITS, LABELS)
    t_torch = analysis.per_sample(torch.tensor(LOGITS, dtype=torch.float32), torch.tensor(LABELS))
    pd.testing.assert_frame_equal(t_np, t_torch, check_exact=False, atol=1e-6)
    shifted = analysis.per_sample(LOGITS + 100.0, LABELS)
    for col in ("logit_gap", "margin", "confidence", "entropy", "pred"):
        assert np.allclose(shifted[col], t_np[col])
    assert np.allclose(shifted.max_logit, t_np.max_logit + 100)


def test_per_sample_extreme_logits_stay_finite():
    z = np.array([[1000.0, -1000.0, 0.0], [-5.0, 800.0, 799.0]])
    t = analysis.per_sample(z, np.array([0, 2]))
    assert np.isfinite(t[list(analysis.QUANTITIES)].to_numpy()).all()
    assert t.confidence[0] == pytest.approx(1.0) and t.entropy[0] == pytest.approx(0.0, abs=1e-9)
    assert t.margin.tolist() == [1000.0, -1.0]
    assert t.logit_gap.tolist() == [1000.0, 1.0]


def test_per_sample_matches_brute_force_on_random_logits():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 7)) * 3
    y = rng.integers(0, 7, size=50)
    t = analysis.per_sample(z, y)
    for i in range(50):
        s = np.sort(z[i])[::-1]
        p = _soft(z[i])
        assert t.max_logit[i] == pytest.approx(s[0])
        assert t.logit_gap[i] == pytest.approx(s[0] - s[1])
        assert t.margin[i] == pytest.approx(z[i, y[i]] - np.delete(z[i], y[i]).max())
        assert t.confidence[i] == pytest.approx(p.max())
        assert t.entropy[i] == pytest.approx(-(p * np.log(p)).sum())
        assert t.correct[i] == (np.argmax(z[i]) == y[i]) == (t.margin[i] > 0)


def test_summarize():
    t = analysis.per_sample(LOGITS, LABELS)
    s = analysis.summarize(t)
    assert list(s.index) == list(analysis.QUANTITIES)
    assert list(s.columns) == ["mean", "std", "q05", "q25", "median", "q75", "q95"]
    assert s.loc["max_logit", "mean"] == pytest.approx(2.0)
    assert s.loc["max_logit", "std"] == pytest.approx(math.sqrt(2 / 3))  # population std of 2, 3, 1
    assert s.loc["max_logit", "median"] == 2.0
    assert s.loc["logit_gap", "q25"] == pytest.approx(0.5)  # linear interpolation of 0, 1, 2
    assert s.loc["margin", "mean"] == pytest.approx(-2 / 3)
    assert s.loc["margin", "q05"] == pytest.approx(-3 + 0.1 * 3)  # between -3 and 0 at 10% of the way
    small = analysis.summarize(t, columns=["margin"])
    assert list(small.index) == ["margin"]


def test_accuracy():
    assert analysis.accuracy(LOGITS, LABELS) == pytest.approx(2 / 3)
    assert analysis.accuracy(torch.tensor(LOGITS), torch.tensor([0, 1, 2])) == pytest.approx(2 / 3)
    assert math.isnan(analysis.accuracy(np.zeros((0, 3)), np.zeros(0, dtype=int)))


def test_rank_correlation_known_values():
    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert analysis.rank_correlation(a, a) == pytest.approx({"spearman": 1.0, "kendall": 1.0})
    assert analysis.rank_correlation(a, a[::-1]) == pytest.approx({"spearman": -1.0, "kendall": -1.0})
    # b swaps two neighbouring pairs: sum d^2 = 4 -> rho = 1 - 6*4/(5*24) = 0.8; 2 of 10 pairs discordant
    b = [2.0, 1.0, 4.0, 3.0, 5.0]
    assert analysis.rank_correlation(a, b) == pytest.approx({"spearman": 0.8, "kendall": 0.6})
    # monotone transforms do not change ranks
    assert analysis.rank_correlation(np.exp(a), np.array(b) ** 3) == pytest.approx({"spearman": 0.8, "kendall": 0.6})


def test_rank_correlation_equals_scipy_with_ties():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 5, size=40).astype(float)
    b = a + rng.normal(size=40)
    r = analysis.rank_correlation(torch.tensor(a), pd.Series(b))
    assert r["spearman"] == pytest.approx(stats.spearmanr(a, b).statistic)
    assert r["kendall"] == pytest.approx(stats.kendalltau(a, b).statistic)
    assert 0.3 < r["kendall"] < r["spearman"] < 1
    assert isinstance(r["spearman"], float) and isinstance(r["kendall"], float)


# Few distinct values, so that ties in a, in b and in both at once are common; lengths cross the merge
# sort's powers of two.
_tied_pairs = st.integers(1, 70).flatmap(lambda n: st.tuples(
    st.lists(st.integers(-3, 3), min_size=n, max_size=n), st.lists(st.integers(-3, 3), min_size=n, max_size=n)))


@settings(max_examples=200, deadline=None)
@given(_tied_pairs)
def test_rank_correlation_and_ks_equal_scipy_on_any_ties(pair):
    a, b = (np.array(v, dtype=float) for v in pair)
    r = analysis.rank_correlation(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on a constant series; we answer NaN without a warning
        spearman, kendall = stats.spearmanr(a, b).statistic, stats.kendalltau(a, b).statistic
    for ours, ref in ((r["spearman"], spearman), (r["kendall"], kendall)):
        assert (math.isnan(ours) and math.isnan(ref)) or ours == pytest.approx(ref, abs=1e-12)
    assert analysis.ks_distance(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)


def test_rank_correlation_is_fast_and_exact_on_a_large_split():
    rng = np.random.default_rng(3)
    a = rng.normal(size=20_000)
    b = np.round(a + rng.normal(size=20_000), 1)  # many ties in b only
    r = analysis.rank_correlation(a, b)
    assert r["kendall"] == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-12)
    assert r["spearman"] == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


def test_rank_correlation_rejects_series_of_different_lengths():
    with pytest.raises(ValueError, match="same length"):
        analysis.rank_correlation([1.0, 2.0], [1.0, 2.0, 3.0])


def test_top_differences():
    conf_a = np.array([0.9, 0.5, 0.99, 0.2, 0.6])
    conf_b = np.array([0.1, 0.5, 0.98, 0.9, 0.7])
    # a - b = [0.8, 0, 0.01, -0.7, -0.1]
    a_more, b_more = analysis.top_differences(conf_a, conf_b, k=2)
    assert a_more.tolist() == [0, 2]
    assert b_more.tolist() == [3, 4]
    a_all, b_all = analysis.top_differences(conf_a, conf_b, k=10)  # k larger than N
    assert a_all.tolist() == [0, 2, 1, 4, 3] and b_all.tolist() == [3, 4, 1, 2, 0]
    a_t, _ = analysis.top_differences(torch.tensor(conf_a), torch.tensor(conf_b), k=1)
    assert a_t.tolist() == [0]


def test_incorrect_class_order_agreement_identical_and_reversed():
    rng = np.random.default_rng(2)
    t = rng.normal(size=(30, 10))
    y = rng.integers(0, 10, size=30)
    assert np.allclose(analysis.incorrect_class_order_agreement(t, t, y), 1.0)
    # reverse the ranking of the incorrect classes, keep the true class where it is
    s = t.copy()
    for i in range(30):
        idx = np.delete(np.arange(10), y[i])
        order = idx[np.argsort(t[i, idx])]
        s[i, order] = t[i, order[::-1]]
    tau = analysis.incorrect_class_order_agreement(t, s, y)
    assert tau.shape == (30,) and np.allclose(tau, -1.0)


def test_incorrect_class_order_agreement_ignores_the_true_class():
    rng = np.random.default_rng(3)
    t = rng.normal(size=(20, 6))
    s = t + rng.normal(size=(20, 6)) * 0.5
    y = rng.integers(0, 6, size=20)
    base = analysis.incorrect_class_order_agreement(t, s, y)
    moved = s.copy()
    moved[np.arange(20), y] = rng.normal(size=20) * 100  # anything at all for the true class
    assert np.array_equal(analysis.incorrect_class_order_agreement(t, moved, y), base)
    assert not np.allclose(base, 1.0)  # the noise did change some orders (so the test can tell)


def test_incorrect_class_order_agreement_hand_computed():
    # true class 0; teacher orders the wrong classes 1 > 2 > 3; student 1 > 3 > 2
    t = np.array([[9.0, 3.0, 2.0, 1.0]])
    s = np.array([[0.0, 3.0, 1.0, 2.0]])
    # pairs (1,2) agree, (1,3) agree, (2,3) disagree -> (2 - 1) / 3
    assert analysis.incorrect_class_order_agreement(t, s, np.array([0])) == pytest.approx([1 / 3])
    # a tie in the student counts as neither -> (2 - 0) / 3 with tau-a
    s_tie = np.array([[0.0, 3.0, 1.0, 1.0]])
    assert analysis.incorrect_class_order_agreement(t, s_tie, np.array([0])) == pytest.approx([2 / 3])
    # torch inputs work too
    assert analysis.incorrect_class_order_agreement(torch.tensor(t), torch.tensor(s), torch.tensor([0])) == \
        pytest.approx([1 / 3])


def test_ks_distance():
    rng = np.random.default_rng(4)
    a = rng.normal(size=200)
    assert analysis.ks_distance(a, a) == 0.0
    assert analysis.ks_distance(a, rng.permutation(a)) == 0.0
    assert analysis.ks_distance([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == 1.0
    assert analysis.ks_distance([1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0]) == pytest.approx(0.5)
    b = rng.normal(loc=1.0, size=200)
    assert analysis.ks_distance(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic)
    assert analysis.ks_distance(a, b) > 0.25


def test_softmax_rows_sum_to_one_and_are_stable():
    p = analysis.softmax(np.array([[1000.0, 0.0], [1.0, 1.0]]))
    assert np.allclose(p.sum(1), 1.0) and np.allclose(p, [[1.0, 0.0], [0.5, 0.5]])
