"""The one training loop: every method learns, callbacks work, runs are reproducible."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from core.config import AttackSpec, DistillSpec, TrainSpec
from core.engine.data import load_dataset
from core.engine.models import build_model
from core.engine.train import TrainProgress, train
from core.errors import Cancelled, LogitscopeError

N_TRAIN = 640  # a subset of the 1437 training images, for the tests that need no learning



@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def small(digits):
    return replace(digits, x_train=digits.x_train[:N_TRAIN], y_train=digits.y_train[:N_TRAIN])


def _model(ds, seed=0):
    torch.manual_seed(seed)
    return build_model("digits_cnn", ds.shape, ds.num_classes, ds.mean, ds.std)


def _acc(model, ds):
    with torch.no_grad():
        return (model(ds.x_test).argmax(1) == ds.y_test).float().mean().item()


def _teacher_logits(ds, scale=6.0, seed=0):
    """Synthetic teacher logits: right about every label, with noise on the rest."""
    g = torch.Generator().manual_seed(seed)
    return F.one_hot(ds.y_train, 10).float() * scale + torch.randn(len(ds.y_train), 10, generator=g)


# Two epochs of batches of 32 on all 1437 images: 90 steps, enough for > 90% clean accuracy.
ATK = AttackSpec(eps=0.1, steps=2, seed=0)
SPECS = {
    "standard": TrainSpec(epochs=2, batch_size=32, lr=4e-3),
    "pgd": TrainSpec(method="pgd", epochs=2, batch_size=32, lr=4e-3, attack=ATK),
    "trades": TrainSpec(method="trades", epochs=2, batch_size=32, lr=4e-3, attack=ATK, trades_beta=1.0),
    "distill": TrainSpec(method="distill", epochs=2, batch_size=32, lr=4e-3, distill=DistillSpec(teacher="synthetic")),
}


@pytest.fixture(scope="module")
def trained(digits):
    """Each method trained once for the module: method -> (model, progress reports, accuracy before)."""
    out = {}
    for method, spec in SPECS.items():
        model, reports = _model(digits), []
        before = _acc(model, digits)
        teacher = _teacher_logits(digits) if method == "distill" else None
        assert train(model, digits, spec, teacher_logits=teacher, progress=reports.append) is model  # in place
        out[method] = (model, reports, before)
    return out


@pytest.mark.parametrize("method", list(SPECS))
def test_every_method_learns(digits, trained, method):
    model, reports, before = trained[method]
    assert not model.training  # handed back in eval mode
    spec = SPECS[method]
    first_epoch = [p.loss for p in reports if p.epoch == 1]
    last_epoch = [p.loss for p in reports if p.epoch == spec.epochs]
    assert all(math.isfinite(p.loss) for p in reports)
    assert last_epoch[-1] < 0.7 * first_epoch[-1], (first_epoch[-1], last_epoch[-1])  # epoch means fall
    acc = _acc(model, digits)
    assert before < 0.3 and acc > 0.85, (before, acc)  # chance is 0.1


def test_adversarial_training_is_more_robust_than_standard(digits, trained):
    from core.engine.attacks import pgd

    x, y = digits.x_test[:200], digits.y_test[:200]
    spec = AttackSpec(eps=0.1, steps=5)
    out = {}
    for method in ("standard", "pgd", "trades"):
        m = trained[method][0]
        x_adv = pgd(m, x, y, spec, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            out[method] = (m(x_adv).argmax(1) == y).float().mean().item()
    assert out["pgd"] > out["standard"] + 0.1, out
    assert out["trades"] > out["standard"] + 0.1, out


def test_progress_reports_every_batch_with_increasing_fraction(small):
    calls: list[TrainProgress] = []
    spec = TrainSpec(epochs=2, batch_size=128)
    train(_model(small), small, spec, progress=calls.append)
    batches = math.ceil(N_TRAIN / 128)
    assert len(calls) == 2 * batches
    fractions = [p.fraction for p in calls]
    assert all(b > a for a, b in zip(fractions, fractions[1:]))
    assert fractions[0] == pytest.approx(1 / (2 * batches)) and fractions[-1] == 1.0
    assert [(p.epoch, p.batch) for p in calls] == [(e, b) for e in (1, 2) for b in range(1, batches + 1)]
    assert all(p.epochs == 2 and p.batches == batches for p in calls)
    elapsed = [p.elapsed for p in calls]
    assert all(b >= a for a, b in zip(elapsed, elapsed[1:])) and elapsed[0] >= 0
    assert calls[-1].eta == pytest.approx(0.0, abs=1e-9) and all(p.eta >= 0 for p in calls)


def test_cancel_stops_promptly(small):
    polls, seen = [], []

    def cancel():
        polls.append(1)
        return len(polls) >= 3

    model = _model(small)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    start = time.perf_counter()
    with pytest.raises(Cancelled):
        train(model, small, replace(SPECS["pgd"], epochs=50), progress=seen.append, cancel=cancel)
    assert time.perf_counter() - start < 10  # 3 batches, not 50 epochs
    assert len(polls) == 3 and len(seen) == 3  # polled after every batch, stopped at the first True
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # it had started


def test_cancel_returning_false_never_stops(small):
    polls = []
    train(_model(small), small, TrainSpec(epochs=1, batch_size=256), cancel=lambda: polls.append(1) or False)
    assert len(polls) == math.ceil(N_TRAIN / 256)


@pytest.mark.parametrize("method", ["standard", "pgd"])
def test_same_seed_gives_identical_weights(small, method):
    spec = replace(SPECS[method], epochs=1, batch_size=128)
    a, b = _model(small), _model(small)
    train(a, small, spec)
    train(b, small, spec)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    c = _model(small)
    train(c, small, replace(spec, seed=1))  # another seed shuffles (and attacks) differently
    assert any(not torch.equal(sa[k], v) for k, v in c.state_dict().items())


def test_distill_without_teacher_logits_raises(small):
    with pytest.raises(LogitscopeError, match="teacher"):
        train(_model(small), small, SPECS["distill"])
    with pytest.raises(LogitscopeError, match="teacher"):  # logits for another number of samples
        train(_model(small), small, SPECS["distill"], teacher_logits=torch.zeros(10, 10))


def test_distill_unknown_manipulation_raises(small):
    spec = replace(SPECS["distill"], distill=DistillSpec(teacher="t", manipulation="scramble"))
    with pytest.raises(LogitscopeError, match="scramble"):
        train(_model(small), small, spec, teacher_logits=_teacher_logits(small))


def test_distill_follows_the_teacher(digits):
    """A student of a teacher that is confidently wrong (label + 1) learns the teacher, not the labels."""
    spec = SPECS["distill"]
    wrong = F.one_hot((digits.y_train + 1) % 10, 10).float() * 8
    m = _model(digits)
    train(m, digits, spec, teacher_logits=wrong)
    with torch.no_grad():
        pred = m(digits.x_test).argmax(1)
    assert (pred == (digits.y_test + 1) % 10).float().mean() > 0.8
    assert _acc(m, digits) < 0.1
    # with hard_weight 1 the teacher is ignored and the labels win
    m2 = _model(digits)
    train(m2, digits, replace(spec, distill=replace(spec.distill, hard_weight=1.0)), teacher_logits=wrong)
    assert _acc(m2, digits) > 0.85


def test_hard_labels_student_ignores_the_teacher(small):
    spec = replace(SPECS["distill"], epochs=1, distill=DistillSpec(teacher="t", manipulation="hard_labels"))
    states = []
    for teacher in (None, _teacher_logits(small, seed=1), torch.randn(N_TRAIN, 10) * 50):
        m = _model(small)
        train(m, small, spec, teacher_logits=teacher)
        states.append(m.state_dict())
    assert all(torch.equal(states[0][k], s[k]) for s in states[1:] for k in s)
    # ... and is exactly a standard cross-entropy run with the same settings
    std = _model(small)
    train(std, small, TrainSpec(epochs=1, batch_size=32, lr=4e-3))
    assert all(torch.equal(states[0][k], v) for k, v in std.state_dict().items())


def test_teacher_logits_matter_for_a_none_student(small):
    spec = replace(SPECS["distill"], epochs=1)
    a, b = _model(small), _model(small)
    train(a, small, spec, teacher_logits=_teacher_logits(small, seed=1))
    train(b, small, spec, teacher_logits=_teacher_logits(small, seed=2))
    assert any(not torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_divergence_is_reported(small):
    bad = _teacher_logits(small)
    bad[0, 0] = float("nan")
    spec = replace(SPECS["distill"], epochs=1, batch_size=N_TRAIN)  # one batch, containing the NaN row
    with pytest.raises(LogitscopeError, match="diverged"):
        train(_model(small), small, spec, teacher_logits=bad)
