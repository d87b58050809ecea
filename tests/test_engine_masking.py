"""The gradient-masking check: each flag on hand-made numbers, then on measured ones: a model that rounds its
logits (zero gradients everywhere) is flagged, the honest PGD-AT and standard models of the study are not."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from core.engine.analysis import accuracy
from core.engine.attacks import attack_grid
from core.engine.data import load_dataset
from core.engine.masking import MaskingReport, masking_check, unbounded_accuracy, unbounded_attack
from core.engine.reliable import reliable_grid
from core.study.hyper import eval_attack, reliable_attack
from core.study.recipes import default_recipes, load_model

HONEST = {0.0: 0.98, 0.1: 0.90, 0.2: 0.65}


def test_honest_numbers_pass():
    report = masking_check(HONEST, {0.0: 0.98, 0.1: 0.88, 0.2: 0.60}, {0.0: 0.98, 0.1: 0.89, 0.2: 0.62}, [], 0.0, 10)
    assert isinstance(report, MaskingReport) and not report.flagged and report.reasons == []
    assert report.chance == 0.1 and report.unbounded_acc == 0.0 and report.pgd_acc == HONEST


def test_autoattack_far_below_pgd_is_flagged_with_its_eps_and_gap():
    report = masking_check(HONEST, {0.0: 0.98, 0.1: 0.88, 0.2: 0.40}, None, [], None, 10)
    assert report.flagged and len(report.reasons) == 1
    assert "eps 0.2" in report.reasons[0] and "65.0% against 40.0%" in report.reasons[0] and "25.0%" in report.reasons[0]


def test_a_gap_must_exceed_the_sampling_noise_of_the_test_images():
    # measured on the honest PGD-AT model's first 64 test images: AutoAttack takes 7 more than PGD-20 at eps 0.2
    pgd, aa = {0.0: 0.984, 0.1: 0.969, 0.2: 0.688}, {0.0: 0.984, 0.1: 0.953, 0.2: 0.578}
    assert not masking_check(pgd, aa, None, [], None, 10, n_images=64).flagged  # noise margin 6.8%
    assert masking_check(pgd, aa, None, [], None, 10, n_images=10_000).flagged  # margin 0.5%
    assert masking_check(pgd, aa, None, [], None, 10).flagged  # no image count: no margin
    report = masking_check(pgd, {0.0: 0.984, 0.1: 0.953, 0.2: 0.15}, None, [], None, 10, n_images=64)
    assert report.flagged and "sampling noise over 64 images" in report.reasons[0]


def test_cross_entropy_far_above_margin_is_flagged():
    report = masking_check(HONEST, HONEST, {0.0: 0.98, 0.1: 0.75, 0.2: 0.65}, [], None, 10)
    assert report.flagged and "margin loss" in report.reasons[0] and "eps 0.1" in report.reasons[0]


def test_autoattack_warnings_are_flagged_once_each():
    w = "there are 5 points with zero gradient!"
    report = masking_check(HONEST, HONEST, None, [w, w], None, 10)
    assert report.flagged and report.reasons == [f"AutoAttack warned: {w}"] and report.warnings == [w]


def test_accuracy_rising_with_eps_is_flagged_beyond_two_images():
    rising = {0.0: 0.98, 0.1: 0.60, 0.2: 0.65}
    report = masking_check(rising, rising, None, [], None, 10, n_images=100)  # +5 images
    assert report.flagged and any("rises from 60.0% at eps 0.1 to 65.0% at eps 0.2" in r for r in report.reasons)
    assert report.rise_tolerance == 0.02
    slight = {0.0: 0.98, 0.1: 0.60, 0.2: 0.62}  # +2 images of 100: within the tolerance
    assert not masking_check(slight, slight, None, [], None, 10, n_images=100).flagged


def test_accuracy_above_chance_under_an_unbounded_attack_is_flagged():
    assert not masking_check(HONEST, HONEST, None, [], 0.19, 10).flagged  # chance 10% + 10% not exceeded
    report = masking_check(HONEST, HONEST, None, [], 0.21, 10)
    assert report.flagged and "unbounded" in report.reasons[0] and "21.0%" in report.reasons[0]
    assert masking_check(HONEST, HONEST, None, [], 0.59, 2).flagged is False  # chance is 50% with 2 classes


def test_the_unbounded_attack_can_reach_any_image():
    linf = unbounded_attack("linf", 64)
    assert linf.eps == 1.0 and linf.alpha == 0.1 and linf.steps == 50 and not linf.random_start
    assert unbounded_attack("l2", 64).eps == 8.0 and unbounded_attack("l2", 3 * 224 * 224).eps == 100.0


# --- measured on the study's models (slow) ------------------------------------------------------------

class Rounded(nn.Module):
    """Gradient masking by construction: logits rounded to 0.01, whose gradient is zero everywhere."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(self.model(x) * 100) / 100


GRID = (0.0, 0.1, 0.2)
N = 64


def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> MaskingReport:
    """Every number of the check, measured on x, y with the evaluation's PGD-20 and AutoAttack-fast."""
    pgd = eval_attack("digits")
    ce = attack_grid(model, x, y, pgd, GRID, batch_size=128)
    margin = attack_grid(model, x, y, replace(pgd, loss="margin"), GRID, batch_size=128)
    aa = reliable_grid(model, x, y, reliable_attack("digits"), GRID, 128, "cpu")
    acc = {name: {e: accuracy(g[e], y) for e in GRID} for name, g in (("ce", ce), ("margin", margin), ("aa", aa))}
    warnings = [w for e in GRID for w in aa.warnings[e]]
    return masking_check(acc["ce"], acc["aa"], acc["margin"], warnings, unbounded_accuracy(model, x, y, n=N), 10,
                         n_images=len(y))


@pytest.fixture(scope="module")
def study_models(_study_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOGITSCOPE_CACHE", str(_study_dir))
        recipes = {r.name: r for r in default_recipes("digits")}
        return {name: load_model(recipes[name]).eval() for name in ("standard", "pgd-at")}


@pytest.fixture(scope="module")
def data():
    ds = load_dataset("digits")
    return ds.x_test[:N], ds.y_test[:N]


def test_a_model_that_rounds_its_logits_is_flagged(study_models, data):
    x, y = data
    report = measure(Rounded(study_models["pgd-at"]), x, y)
    assert report.flagged, report
    assert report.pgd_acc[0.0] > 0.9
    assert report.unbounded_acc > 0.9  # nothing moves it: it keeps its clean accuracy
    assert any("zero gradient" in w for w in report.warnings)
    assert any("unbounded" in r for r in report.reasons)


@pytest.mark.parametrize("name", ["pgd-at", "standard"])
def test_the_honest_models_of_the_study_are_not_flagged(study_models, data, name):
    report = measure(study_models[name], *data)
    assert not report.flagged, report.reasons
    assert report.unbounded_acc <= 0.05
    assert report.reliable_acc[0.2] <= report.pgd_acc[0.2]
