"""Intervals and verdicts with numbers: widths against the binomial, a loop reference, pairing, determinism."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from core.engine import analysis, stats

ROOT = Path(__file__).resolve().parent.parent


def bernoulli(p: float, n: int = 360, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(n) < p


def width(iv: stats.Interval) -> float:
    return iv.hi - iv.lo


def loop_reference(per_seed, n_boot=2000, level=0.95, seed=0):
    """The two-level bootstrap written the slow, obvious way: one resample at a time."""
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(n_boot):
        seeds = rng.integers(0, len(per_seed), len(per_seed)) if len(per_seed) > 1 else [0]
        reps.append(np.mean([rng.choice(per_seed[s], len(per_seed[s])).mean() for s in seeds]))
    return np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])


def test_a_bernoulli_mean_over_360_images_has_the_binomial_interval():
    x = bernoulli(0.75)
    iv = stats.interval([x])
    half = 1.96 * np.sqrt(0.75 * 0.25 / 360)  # 0.0447
    assert iv.estimate == x.mean() and iv.n_seeds == 1 and iv.n == 360 and iv.level == 0.95
    assert iv.lo < iv.estimate < iv.hi
    assert width(iv) == pytest.approx(2 * half, rel=0.12)


def test_95_percent_intervals_cover_the_true_mean_about_95_percent_of_the_time():
    p, trials = 0.75, 200
    covered = sum(iv.lo <= p <= iv.hi for iv in (stats.interval([bernoulli(p, seed=t)], n_boot=500, seed=t)
                                                  for t in range(trials)))
    assert 0.89 <= covered / trials <= 0.99  # binomial(200, 0.95): 0.92..0.98 at +-2 sd; percentile intervals run a bit short


@pytest.mark.parametrize("seeds, shift", [(1, 0.0), (3, 0.0), (3, 0.1)])
def test_the_vectorised_bootstrap_agrees_with_a_loop_over_resamples(seeds, shift):
    per_seed = [bernoulli(0.75 + shift * (s - 1), seed=s) for s in range(seeds)]
    lo, hi = loop_reference(per_seed, n_boot=1000, seed=1)
    iv = stats.interval(per_seed, n_boot=4000)
    assert iv.estimate == pytest.approx(np.mean([x.mean() for x in per_seed]))
    assert width(iv) == pytest.approx(hi - lo, rel=0.15)
    assert (iv.lo + iv.hi) / 2 == pytest.approx((lo + hi) / 2, abs=0.01)


def test_the_interval_shrinks_with_more_seeds_when_seeds_agree():
    widths = [width(stats.interval([bernoulli(0.75, seed=s) for s in range(k)])) for k in (1, 3, 10)]
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < 0.6 * widths[0]  # ten seeds: ~sqrt(2 / 10) of one seed's width (both levels resampled)


def test_seed_to_seed_variance_widens_the_interval():
    same = [bernoulli(0.75, seed=s) for s in range(3)]
    shifted = [bernoulli(p, seed=s) for s, p in enumerate((0.65, 0.75, 0.85))]
    assert width(stats.interval(shifted)) > 1.5 * width(stats.interval(same))
    assert stats.interval(shifted).estimate == pytest.approx(np.mean([x.mean() for x in shifted]))


def test_pairing_removes_the_noise_both_models_share():
    rng = np.random.default_rng(3)
    a = [bernoulli(0.75, seed=s) for s in range(3)]
    b = [x ^ (rng.random(360) < 0.05) for x in a]  # the same images right and wrong, 5% flipped
    paired = stats.paired_difference(a, b)
    unpaired = stats.paired_difference(a, [rng.permutation(x) for x in b])  # pairing broken, same marginals
    assert paired.estimate == pytest.approx(np.mean([x.mean() - y.mean() for x, y in zip(a, b)]))
    assert paired.estimate == pytest.approx(unpaired.estimate)
    assert width(paired) < 0.4 * width(unpaired)
    same = stats.paired_difference(a, a)  # a model against itself: exactly zero, every resample
    assert (same.estimate, same.lo, same.hi) == (0.0, 0.0, 0.0)


def test_same_seed_same_interval_other_seed_close_but_different():
    x = [bernoulli(0.7, seed=s) for s in range(3)]
    assert stats.interval(x, seed=5) == stats.interval(x, seed=5)
    other = stats.interval(x, seed=6)
    assert other != stats.interval(x, seed=5)
    assert other.lo == pytest.approx(stats.interval(x, seed=5).lo, abs=0.01)


def test_any_numpy_reduction_and_level_work():
    x = np.random.default_rng(0).normal(size=360)
    med = stats.interval([x], np.median)
    assert med.estimate == np.median(x) and med.lo < med.estimate < med.hi
    assert width(stats.interval([x], level=0.5)) < width(stats.interval([x], level=0.99))
    with pytest.raises(ValueError):
        stats.interval([x], level=1.5)


def test_mismatched_or_empty_input_is_refused():
    with pytest.raises(ValueError, match="one length"):
        stats.paired_difference([np.zeros(3)], [np.zeros(4)])
    with pytest.raises(ValueError, match="same seeds"):
        stats.paired_difference([np.zeros(3)], [np.zeros(3), np.zeros(3)])
    with pytest.raises(ValueError, match="at least one seed"):
        stats.interval([])
    with pytest.raises(ValueError, match="non-empty"):
        stats.interval([np.zeros(0)])


def test_verdict_strings():
    iv = lambda lo, hi, seeds=3: stats.Interval((lo + hi) / 2, lo, hi, seeds, 360 * seeds)
    assert stats.verdict(iv(0.01, 0.05), +1) == "holds"
    assert stats.verdict(iv(0.01, 0.05), -1) == "reversed"
    assert stats.verdict(iv(-0.05, -0.01), -1) == "holds"
    assert stats.verdict(iv(-0.05, -0.01), +1) == "reversed"
    assert stats.verdict(iv(-0.02, 0.05), +1) == "not resolved with 3 seeds"
    assert stats.verdict(iv(-0.02, 0.05, 1), +1) == "not resolved with 1 seed"
    assert stats.verdict(iv(-0.02, 0.05), +1, n_seeds=5) == "not resolved with 5 seeds"
    assert stats.verdict(iv(0.0, 0.05), +1) == "not resolved with 3 seeds"  # touching 0 does not exclude it
    assert stats.verdict(iv(np.nan, np.nan), +1) == "not resolved with 3 seeds"
    assert stats.verdict(iv(0.6, 0.7, 1), -1, null=0.9) == "holds"  # below a threshold
    assert stats.verdict(iv(0.92, 0.97, 1), -1, null=0.9) == "reversed"
    with pytest.raises(ValueError):
        stats.verdict(iv(0.1, 0.2), 0)


def test_average_ranks_and_spearman_match_scipy_with_ties_row_by_row():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 20, (5, 50)).astype(float)  # many ties
    b = a + rng.integers(0, 10, (5, 50))
    for i in range(5):
        assert np.allclose(stats.average_ranks(a[i]), scipy_stats.rankdata(a[i]))
        assert stats.spearman(a[i], b[i]) == pytest.approx(scipy_stats.spearmanr(a[i], b[i])[0])
        assert stats.spearman(a, b)[i] == pytest.approx(analysis.rank_correlation(a[i], b[i])["spearman"])
    dense = stats.dense_ranks(a)
    assert dense.dtype == np.int64 and np.allclose(stats.average_ranks(dense), stats.average_ranks(a))
    assert np.allclose(stats.spearman(dense, stats.dense_ranks(b)), stats.spearman(a, b))
    assert np.isnan(stats.spearman(np.ones(10), np.arange(10.0)))


def test_paired_statistic_spearman_estimate_is_the_plain_spearman():
    rng = np.random.default_rng(1)
    a = rng.normal(size=360)
    b = a + rng.normal(size=360)
    iv = stats.paired_statistic([stats.dense_ranks(a)], [stats.dense_ranks(b)], stats.spearman)
    assert iv.estimate == pytest.approx(scipy_stats.spearmanr(a, b)[0])
    assert iv.lo < iv.estimate < iv.hi and width(iv) < 0.2
    on_floats = stats.paired_statistic([a], [b], stats.spearman)  # same resamples, same numbers
    assert (on_floats.lo, on_floats.hi) == pytest.approx((iv.lo, iv.hi))


def test_bootstraps_take_milliseconds():
    x = bernoulli(0.75)
    stats.interval([x])  # warm up
    start = time.process_time()
    stats.interval([x], n_boot=2000)
    mean_s = time.process_time() - start
    a = stats.dense_ranks(np.random.default_rng(0).normal(size=360))
    start = time.process_time()
    stats.paired_statistic([a], [a[::-1]], stats.spearman, n_boot=1000)
    spearman_s = time.process_time() - start
    # Measured on 2 shared cores: ~7 ms and ~40 ms of CPU; the bounds leave room for slow machines.
    assert mean_s < 0.1, mean_s
    assert spearman_s < 0.5, spearman_s


def test_importing_stats_does_not_import_scipy():
    code = "import sys, core.engine.stats; sys.exit('scipy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
