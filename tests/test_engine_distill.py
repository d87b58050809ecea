"""Teacher-logit manipulations: what each keeps and what it destroys, checked as properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from core.engine.distill import MANIPULATIONS, manipulate
from core.errors import LogitscopeError

KEEP_MAX = ("none", "shuffle_nonmax", "flatten_nonmax", "resample_nonmax")
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])



@st.composite
def logits_and_labels(draw, min_rows=1, max_rows=24):
    """(N, K) float32 logits with distinct values (no ties for the max), multiples of 1/8 in [-25, 25]."""
    n = draw(st.integers(min_rows, max_rows))
    k = draw(st.integers(2, 12))
    ints = draw(hnp.arrays(np.int32, (n, k), elements=st.integers(-200, 200), unique=True))
    labels = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, k - 1)))
    return torch.from_numpy(ints.astype(np.float32) / 8), torch.from_numpy(labels)


def _randn(n=200, k=10, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g) * scale
    labels = torch.randint(0, k, (n,), generator=g)
    return logits, labels


def _nonmax(logits: torch.Tensor) -> torch.Tensor:
    """Each row's non-max values in column order, (N, K-1)."""
    n, k = logits.shape
    mask = torch.ones(n, k, dtype=torch.bool)
    mask[torch.arange(n), logits.argmax(1)] = False
    return logits[mask].view(n, k - 1)


def test_registry_has_the_documented_manipulations():
    assert set(MANIPULATIONS) == {"none", "shuffle_nonmax", "flatten_nonmax", "resample_nonmax",
                                  "global_confidence", "hard_labels"}
    assert [n for n, m in MANIPULATIONS.items() if not m.uses_teacher] == ["hard_labels"]
    assert all(m.keeps and m.destroys for m in MANIPULATIONS.values())


@SETTINGS
@given(data=logits_and_labels(), name=st.sampled_from(sorted(MANIPULATIONS)), seed=st.integers(0, 2**31))
def test_argmax_shape_dtype_and_purity(data, name, seed):
    logits, labels = data
    before_l, before_y = logits.clone(), labels.clone()
    out = manipulate(name, logits, labels, seed=seed)
    assert torch.equal(logits, before_l) and torch.equal(labels, before_y)  # pure: inputs untouched
    assert out.shape == logits.shape and out.dtype == torch.float32
    assert out.data_ptr() != logits.data_ptr()
    assert torch.isfinite(out).all()
    expected = labels if name == "hard_labels" else logits.argmax(1)
    assert torch.equal(out.argmax(1), expected)


@SETTINGS
@given(data=logits_and_labels(), name=st.sampled_from(KEEP_MAX), seed=st.integers(0, 2**31))
def test_max_logit_value_is_kept(data, name, seed):
    logits, labels = data
    out = manipulate(name, logits, labels, seed=seed)
    assert torch.equal(out.max(1).values, logits.max(1).values)
    # the max stays strictly the max: no non-max value reaches it
    assert (_nonmax(out) < out.max(1, keepdim=True).values).all()


@SETTINGS
@given(data=logits_and_labels(), seed=st.integers(0, 2**31))
def test_shuffle_keeps_each_rows_multiset(data, seed):
    logits, labels = data
    out = manipulate("shuffle_nonmax", logits, labels, seed=seed)
    assert torch.equal(out.sort(1).values, logits.sort(1).values)
    assert torch.equal(out.argmax(1), logits.argmax(1))


def test_shuffle_actually_shuffles():
    logits, labels = _randn()
    out = manipulate("shuffle_nonmax", logits, labels, seed=0)
    changed = (out != logits).any(1).float().mean()
    assert changed > 0.95  # 9! orders: almost every row comes out in another order
    # and the order of the incorrect classes is destroyed: the per-row rank correlation is ~0 on average
    a, b = _nonmax(logits), _nonmax(out)
    ra, rb = a.argsort(1).argsort(1).float(), b.argsort(1).argsort(1).float()
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    rho = (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))
    assert abs(rho.mean().item()) < 0.1
    assert not torch.equal(out, manipulate("shuffle_nonmax", logits, labels, seed=1))
    assert torch.equal(out, manipulate("shuffle_nonmax", logits, labels, seed=0))  # seeded


@SETTINGS
@given(data=logits_and_labels(), seed=st.integers(0, 2**31))
def test_flatten_sets_nonmax_to_their_mean(data, seed):
    logits, labels = data
    out = manipulate("flatten_nonmax", logits, labels, seed=seed)
    rest_in, rest_out = _nonmax(logits), _nonmax(out)
    mean = rest_in.mean(1, keepdim=True)
    assert torch.allclose(rest_out, mean.expand_as(rest_out), atol=1e-5)
    assert (rest_out == rest_out[:, :1]).all()  # exactly one value per row
    assert torch.equal(out.max(1).values, logits.max(1).values)


@SETTINGS
@given(data=logits_and_labels(), seed=st.integers(0, 2**31))
def test_resample_keeps_order_and_takes_a_same_class_profile(data, seed):
    logits, labels = data
    out = manipulate("resample_nonmax", logits, labels, seed=seed)
    pred = logits.argmax(1)
    assert torch.equal(out.argmax(1), pred)
    top = logits.max(1, keepdim=True).values
    own, new = _nonmax(logits), _nonmax(out)
    # the order of the non-max classes within each row is kept
    assert torch.equal(own.argsort(1), new.argsort(1))
    # the sorted offsets-from-max are those of some row with the same prediction
    offsets = (_nonmax(logits) - top).sort(1, descending=True).values
    got = (new - top).sort(1, descending=True).values
    for i in range(len(logits)):
        same = (pred == pred[i]).nonzero().flatten()
        dist = (offsets[same] - got[i]).abs().amax(1)
        assert dist.min() < 1e-4, (i, got[i], offsets[same])


def test_resample_takes_another_rows_profile():
    logits, labels = _randn(n=300)
    out = manipulate("resample_nonmax", logits, labels, seed=0)
    top = logits.max(1, keepdim=True).values
    offsets = (_nonmax(logits) - top).sort(1, descending=True).values
    got = (_nonmax(out) - top).sort(1, descending=True).values
    pred = logits.argmax(1)
    for i in range(len(logits)):
        if (pred == pred[i]).sum() > 1:  # a donor exists: it is another row (a derangement per class)
            assert not torch.allclose(got[i], offsets[i], atol=1e-4)
            j = (offsets - got[i]).abs().amax(1).argmin()
            assert j != i and pred[j] == pred[i]
    # sample-wise values change: non-max values of rows are not the originals
    assert (_nonmax(out) - _nonmax(logits)).abs().amax(1).gt(1e-3).float().mean() > 0.95


def test_resample_single_member_class_keeps_its_row():
    logits = torch.tensor([[5.0, 1.0, 0.0], [0.0, 4.0, 2.0], [1.0, 6.0, 0.5]])
    out = manipulate("resample_nonmax", logits, torch.zeros(3, dtype=torch.int64), seed=0)
    assert torch.equal(out[0], logits[0])  # only sample predicting class 0: nothing to swap with
    # rows 1 and 2 (both predict class 1) swap offsets: row 1 gets row 2's (-5.0, -5.5) in its own order
    assert torch.allclose(out[1], torch.tensor([4.0 - 5.5, 4.0, 4.0 - 5.0]))
    assert torch.allclose(out[2], torch.tensor([6.0 - 2.0, 6.0, 6.0 - 4.0]))


def _confidence(z):
    return z.softmax(1).amax(1)


@SETTINGS
@given(data=logits_and_labels(min_rows=2), seed=st.integers(0, 2**31))
def test_global_confidence_keeps_order_and_sets_mean_confidence(data, seed):
    logits, labels = data
    out = manipulate("global_confidence", logits, labels, seed=seed)
    assert torch.equal(out.argsort(1), logits.argsort(1))  # the order of all logits
    target = _confidence(logits).mean()
    assert torch.allclose(_confidence(out), target.expand(len(out)), atol=1e-4)


def test_global_confidence_on_realistic_logits():
    logits, labels = _randn(n=500, scale=4.0)
    out = manipulate("global_confidence", logits, labels)
    conf_in, conf_out = _confidence(logits), _confidence(out)
    assert conf_in.std() > 0.1  # the input's confidences vary a lot ...
    assert (conf_out - conf_in.mean()).abs().max() < 1e-4  # ... the output's are all the mean
    assert torch.equal(out.argsort(1), logits.argsort(1))
    # rows are rescaled versions of themselves (centred): the ratios between logit gaps are kept
    c_in, c_out = logits - logits.mean(1, keepdim=True), out - out.mean(1, keepdim=True)
    scale = (c_out * c_in).sum(1) / (c_in * c_in).sum(1)
    assert (scale > 0).all() and torch.allclose(c_out, scale[:, None] * c_in, atol=1e-3)


@SETTINGS
@given(data=logits_and_labels(), seed=st.integers(0, 2**31))
def test_hard_labels_is_the_one_hot_label(data, seed):
    logits, labels = data
    out = manipulate("hard_labels", logits, labels, seed=seed)
    k = logits.shape[1]
    expected = torch.nn.functional.one_hot(labels, k).float()
    assert torch.equal(out.argmax(1), labels)
    # a one-hot softmax at every temperature the specs allow (up to 100)
    assert torch.allclose((out / 100).softmax(1), expected, atol=1e-6)


@SETTINGS
@given(data=logits_and_labels(), name=st.sampled_from(sorted(MANIPULATIONS)))
def test_fraction_zero_leaves_logits_unchanged(data, name):
    logits, labels = data
    assert torch.equal(manipulate(name, logits, labels, fraction=0.0), logits)


def test_none_is_the_identity():
    logits, labels = _randn()
    assert torch.equal(manipulate("none", logits, labels), logits)


@pytest.mark.parametrize("name", ["shuffle_nonmax", "flatten_nonmax", "resample_nonmax", "global_confidence",
                                  "hard_labels"])
def test_fraction_half_changes_about_half_the_rows(name):
    logits, labels = _randn(n=1000)
    full = manipulate(name, logits, labels, fraction=1.0, seed=3)
    half = manipulate(name, logits, labels, fraction=0.5, seed=3)
    changed = (half != logits).any(1)
    assert 0.4 < changed.float().mean() < 0.6
    # every row is either the original or the manipulated one
    untouched = (half == logits).all(1)
    assert (untouched | changed).all()
    if name != "resample_nonmax":  # row-wise functions: a changed row is the fully manipulated row
        assert torch.allclose(half[changed], full[changed], atol=1e-6)
    assert torch.equal(half, manipulate(name, logits, labels, fraction=0.5, seed=3))
    assert not torch.equal(half, manipulate(name, logits, labels, fraction=0.5, seed=4))


@pytest.mark.parametrize("name", sorted(MANIPULATIONS))
def test_registered_functions_are_pure(name):
    logits, labels = _randn(n=50)
    before_l, before_y = logits.clone(), labels.clone()
    out = MANIPULATIONS[name].fn(logits, labels, torch.Generator().manual_seed(0))
    assert torch.equal(logits, before_l) and torch.equal(labels, before_y)
    out.add_(1.0)  # the output owns its memory
    assert torch.equal(logits, before_l)


def test_manipulate_accepts_other_dtypes_and_returns_float32():
    logits, labels = _randn(n=20)
    out = manipulate("shuffle_nonmax", logits.double(), labels, seed=0)
    assert out.dtype == torch.float32
    assert torch.equal(out, manipulate("shuffle_nonmax", logits, labels, seed=0))


def test_unknown_manipulation():
    logits, labels = _randn(n=4)
    with pytest.raises(LogitscopeError, match="shuffle_nonmax"):
        manipulate("scramble", logits, labels)
