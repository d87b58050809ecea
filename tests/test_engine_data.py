"""The digits dataset: sizes, ranges, dtypes, the documented split, and registry errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits as sk_digits
from sklearn.model_selection import train_test_split

from core.config import DataSpec
from core.engine.data import DATASETS, DESCRIPTIONS, load_dataset, make_dataset
from core.errors import LogitscopeError


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_sizes_shapes_dtypes(digits):
    assert len(digits.x_train) + len(digits.x_test) == 1797
    assert digits.x_train.shape == (1437, 1, 8, 8)
    assert digits.x_test.shape == (360, 1, 8, 8)
    assert digits.y_train.shape == (1437,) and digits.y_test.shape == (360,)
    assert digits.x_train.dtype == torch.float32 and digits.x_test.dtype == torch.float32
    assert digits.y_train.dtype == torch.int64 and digits.y_test.dtype == torch.int64
    assert digits.shape == (1, 8, 8) and digits.num_classes == 10
    assert digits.classes == tuple(str(i) for i in range(10))


def test_pixels_in_unit_range_and_use_it(digits):
    for x in (digits.x_train, digits.x_test):
        assert x.min().item() == 0.0 and x.max().item() == 1.0  # 0..16 grey levels scaled by 1/16
        # values are multiples of 1/16
        assert torch.equal(x * 16, (x * 16).round())


def test_labels_cover_every_class_stratified(digits):
    train_counts = torch.bincount(digits.y_train, minlength=10)
    test_counts = torch.bincount(digits.y_test, minlength=10)
    assert (train_counts > 0).all() and (test_counts > 0).all()
    total = train_counts + test_counts
    # stratified: every class's test share is close to 20%
    share = test_counts.double() / total.double()
    assert ((share - 0.2).abs() < 0.02).all()


def test_split_is_exactly_sklearns(digits):
    bunch = sk_digits()
    train_idx, test_idx = train_test_split(np.arange(1797), test_size=0.2, random_state=0, stratify=bunch.target)
    x = torch.from_numpy((bunch.images / 16.0).astype(np.float32))[:, None]
    y = torch.from_numpy(bunch.target.astype(np.int64))
    assert torch.equal(digits.x_train, x[train_idx])
    assert torch.equal(digits.x_test, x[test_idx])
    assert torch.equal(digits.y_train, y[train_idx])
    assert torch.equal(digits.y_test, y[test_idx])


def test_normalisation_statistics_are_from_the_training_split(digits):
    assert digits.mean == pytest.approx((digits.x_train.mean().item(),), rel=1e-5)
    assert digits.std == pytest.approx((digits.x_train.std().item(),), rel=1e-5)
    # the test split must not leak into the statistics
    assert digits.mean[0] != pytest.approx(torch.cat([digits.x_train, digits.x_test]).mean().item(), rel=1e-6)


def test_loading_is_deterministic_and_memoised(digits):
    assert load_dataset("digits") is digits
    fresh = DATASETS["digits"](None)
    assert torch.equal(fresh.x_train, digits.x_train) and torch.equal(fresh.y_test, digits.y_test)


def test_split_and_limit(digits):
    x, y = digits.split(DataSpec("digits", "train"))
    assert torch.equal(x, digits.x_train) and torch.equal(y, digits.y_train)
    x, y = digits.split(DataSpec("digits", "test", limit=25))
    assert x.shape == (25, 1, 8, 8) and torch.equal(y, digits.y_test[:25])
    x, y = digits.split(DataSpec("digits", "test", limit=10_000))
    assert len(x) == 360


def test_unknown_dataset_names_the_choices():
    with pytest.raises(LogitscopeError) as info:
        load_dataset("nope")
    msg = str(info.value)
    assert "nope" in msg
    for name in DATASETS:
        assert name in msg
    assert "digits" in DESCRIPTIONS


def test_make_dataset_validates():
    x = np.zeros((4, 1, 2, 2), np.float32)
    y = np.array([0, 1, 0, 1])
    ds = make_dataset("tiny", x, y, x, y, ["a", "b"])
    assert ds.num_classes == 2 and ds.std == (pytest.approx(1e-3),)  # std clamped away from 0
    with pytest.raises(LogitscopeError, match=r"\[0, 1\]"):
        make_dataset("tiny", x + 2, y, x, y, ["a", "b"])
    with pytest.raises(LogitscopeError, match="labels"):
        make_dataset("tiny", x, y + 1, x, y, ["a", "b"])
    with pytest.raises(LogitscopeError, match="shape"):
        make_dataset("tiny", x[:, 0], y, x, y, ["a", "b"])


def test_class_names_come_without_loading_where_they_are_fixed(tmp_path, digits):
    from core.engine.data import dataset_classes

    assert dataset_classes("digits") == digits.classes == tuple("0123456789")
    empty = str(tmp_path)  # no MNIST files here: answering proves nothing was loaded
    assert dataset_classes("mnist", empty) == tuple("0123456789")
    with pytest.raises(LogitscopeError):  # CIFAR-10's names come from its files: it must load them
        dataset_classes("cifar10", empty)
