"""A single sample's logits (core.app.samples): on the clean image and under attack, for the detail's two panels."""

from __future__ import annotations

import numpy as np
import pytest

from core.app import samples, views
from core.errors import LogitscopeError


def _bundle() -> views.LogitSet:
    """Two models, two epsilons, two samples, three classes; numbers chosen by hand."""
    a = np.array([[[4, 1, 0], [0, 3, 1]], [[1, 2, 0], [0, 1, 3]]], dtype=np.float32)
    return views.LogitSet(("a", "b"), (0.0, 0.1), np.array([0, 1]), {"a": a, "b": a / 2}, ("0", "1", "2"))


def test_clean_and_attacked_logits_come_from_epsilon_zero_and_the_attack():
    clean, attacked = samples.clean_and_attacked_logits(_bundle(), ["a", "b"], 0.1, 0)
    assert list(clean["logit"]) == [4, 1, 0, 2, 0.5, 0] and list(attacked["logit"]) == [1, 2, 0, 0.5, 1, 0]
    assert list(clean["role"][:3]) == ["true class", "other", "other"]
    assert list(attacked["role"][:3]) == ["true class", "prediction", "other"]  # the attack flipped model a
    assert list(clean.columns) == list(attacked.columns) == ["model", "class", "logit", "role"]


def test_at_epsilon_zero_there_is_no_attacked_panel():
    clean, attacked = samples.clean_and_attacked_logits(_bundle(), ["a"], 0.0, 1)
    assert attacked is None and list(clean["logit"]) == [0, 3, 1]


def test_an_unknown_sample_or_epsilon_is_a_user_error():
    with pytest.raises(LogitscopeError, match="does not exist"):
        samples.clean_and_attacked_logits(_bundle(), ["a"], 0.1, 5)
    with pytest.raises(LogitscopeError, match="not on the grid"):
        samples.clean_and_attacked_logits(_bundle(), ["a"], 0.3, 0)
