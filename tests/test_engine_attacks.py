"""PGD: inside the ball and the box, loss goes up, restarts help, the model is left alone, grids are
independent of their other epsilons and deterministic."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.config import AttackSpec, TrainSpec
from core.engine.attacks import L2, Linf, attack_grid, ce_loss, margin_loss, pgd
from core.engine.data import load_dataset
from core.engine.models import build_model
from core.engine.train import train

N = 96  # test images attacked per check: enough for "most samples" to mean something



@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def model(digits):
    """A standard CNN trained for 2 epochs: accurate enough (>85%) to be attackable."""
    torch.manual_seed(0)
    m = build_model("digits_cnn", digits.shape, digits.num_classes, digits.mean, digits.std)
    train(m, digits, TrainSpec(epochs=2, lr=4e-3, seed=0))
    with torch.no_grad():
        acc = (m(digits.x_test).argmax(1) == digits.y_test).float().mean().item()
    assert acc > 0.85, acc
    return m.eval()


@pytest.fixture(scope="module")
def batch(digits):
    return digits.x_test[:N], digits.y_test[:N]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


NORMS = [("linf", 0.1), ("l2", 1.0)]


def _dist(d: torch.Tensor, norm: str) -> torch.Tensor:
    flat = d.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


@pytest.mark.parametrize("norm,eps", NORMS)
def test_perturbation_inside_ball_and_box(model, batch, norm, eps):
    x, y = batch
    x_adv = pgd(model, x, y, AttackSpec(norm=norm, eps=eps, steps=10), generator=_gen())
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    dist = _dist(x_adv - x, norm)
    assert (dist <= eps + 1e-6).all(), dist.max()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    # the attack uses its budget: most samples end on (or very near) the sphere
    assert (dist > 0.9 * eps).float().mean() > 0.9


@pytest.mark.parametrize("norm,eps", NORMS)
def test_attack_raises_the_loss(model, batch, norm, eps):
    x, y = batch
    x_adv = pgd(model, x, y, AttackSpec(norm=norm, eps=eps, steps=10), generator=_gen())
    with torch.no_grad():
        clean, adv = ce_loss(model(x), y), ce_loss(model(x_adv), y)
        acc_clean = (model(x).argmax(1) == y).float().mean()
        acc_adv = (model(x_adv).argmax(1) == y).float().mean()
    assert adv.mean() > clean.mean() + 0.5
    assert (adv >= clean - 1e-6).float().mean() >= 0.95
    assert acc_adv < acc_clean - 0.2


@pytest.mark.parametrize("norm,eps", NORMS)
def test_attack_without_random_start_never_lowers_the_loss_much(model, batch, norm, eps):
    x, y = batch
    x_adv = pgd(model, x, y, AttackSpec(norm=norm, eps=eps, steps=10, random_start=False))
    with torch.no_grad():
        clean, adv = ce_loss(model(x), y), ce_loss(model(x_adv), y)
    assert (adv >= clean - 1e-4).float().mean() >= 0.95
    # deterministic without random start
    again = pgd(model, x, y, AttackSpec(norm=norm, eps=eps, steps=10, random_start=False))
    assert torch.equal(x_adv, again)


def test_zero_steps_is_the_random_start_only(model, batch):
    x, y = batch
    x0 = pgd(model, x, y, AttackSpec(eps=0.1, steps=0, random_start=False))
    assert torch.equal(x0, x)
    xr = pgd(model, x, y, AttackSpec(eps=0.1, steps=0), generator=_gen())
    assert not torch.equal(xr, x) and ((xr - x).abs() <= 0.1 + 1e-6).all()


def test_eps_zero_returns_the_input(model, batch):
    x, y = batch
    assert torch.equal(pgd(model, x, y, AttackSpec(eps=0.0, steps=5), generator=_gen()), x)


def test_margin_loss_values():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, -1.0]])
    y = torch.tensor([0, 0])
    assert margin_loss(logits, y).tolist() == [2.0 - 3.0, 5.0 - 0.0]


@pytest.mark.parametrize("norm,eps", NORMS)
def test_margin_loss_attack(model, batch, norm, eps):
    x, y = batch
    spec = AttackSpec(norm=norm, eps=eps, steps=10, loss="margin")
    x_adv = pgd(model, x, y, spec, generator=_gen())
    assert (_dist(x_adv - x, norm) <= eps + 1e-6).all() and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        clean, adv = margin_loss(model(x), y), margin_loss(model(x_adv), y)
    assert adv.mean() > clean.mean() + 1.0
    assert (adv >= clean - 1e-6).float().mean() >= 0.95
    # a positive margin loss means misclassified: it must agree with the arg-max
    with torch.no_grad():
        wrong = model(x_adv).argmax(1) != y
    assert torch.equal(wrong, adv > 0)


@pytest.mark.parametrize("norm,eps", NORMS)
@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_restarts_never_worse_than_one(model, batch, norm, eps, loss):
    x, y = batch
    fn = ce_loss if loss == "ce" else margin_loss
    one = pgd(model, x, y, AttackSpec(norm=norm, eps=eps, steps=5, loss=loss), generator=_gen(3))
    three = pgd(model, x, y, AttackSpec(norm=norm, eps=eps, steps=5, restarts=3, loss=loss), generator=_gen(3))
    with torch.no_grad():
        l1, l3 = fn(model(one), y), fn(model(three), y)
    assert (l3 >= l1 - 1e-4).all()  # the first restart is the single run; only float noise may differ
    assert (l3 > l1 + 1e-3).any()  # the extra restarts found something better for some sample
    assert (_dist(three - x, norm) <= eps + 1e-6).all() and three.min() >= 0 and three.max() <= 1


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_model_mode_weights_and_grads_untouched(digits, batch, mode):
    torch.manual_seed(0)
    m = build_model("digits_cnn", digits.shape, 10, digits.mean, digits.std)
    m.train(mode == "train")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x, y = batch
    for spec in (AttackSpec(eps=0.1, steps=3), AttackSpec(norm="l2", eps=1.0, steps=3, restarts=2, loss="margin")):
        pgd(m, x, y, spec, generator=_gen())
    assert m.training == (mode == "train")
    assert all(mod.training == (mode == "train") for mod in m.modules())
    assert all(p.grad is None for p in m.parameters())
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_existing_parameter_gradients_are_not_accumulated_into(model, batch):
    x, y = batch
    p = next(model.parameters())
    p.grad = torch.ones_like(p)
    try:
        pgd(model, x, y, AttackSpec(eps=0.1, steps=3), generator=_gen())
        assert torch.equal(p.grad, torch.ones_like(p))
    finally:
        p.grad = None


def test_per_sample_eps_is_respected(model, batch):
    x, y = batch
    eps = torch.tensor([0.0, 0.03, 0.1, 0.3]).repeat(N // 4)
    x_adv = pgd(model, x, y, AttackSpec(eps=0.05, steps=10), eps=eps, generator=_gen())
    dist = _dist(x_adv - x, "linf")
    assert (dist <= eps + 1e-6).all()
    assert torch.equal(x_adv[eps == 0], x[eps == 0])
    # every sample spends (most of) its own budget, not the spec's 0.05
    big = eps > 0
    assert (dist[big] > 0.9 * eps[big]).all()
    # and the step size follows each sample's eps: the largest budget hurts the most
    with torch.no_grad():
        wrong = model(x_adv).argmax(1) != y
    assert wrong[eps == 0.3].float().mean() > wrong[eps == 0.03].float().mean()


def test_per_sample_eps_l2(model, batch):
    x, y = batch
    eps = torch.linspace(0.0, 2.0, N)
    x_adv = pgd(model, x, y, AttackSpec(norm="l2", eps=1.0, steps=10), eps=eps, generator=_gen())
    dist = _dist(x_adv - x, "l2")
    assert (dist <= eps + 1e-6).all()
    assert (dist[eps > 0] > 0.5 * eps[eps > 0]).all()


@pytest.mark.parametrize("threat", [Linf(), L2()])
def test_threat_projection(threat):
    g = _gen(1)
    d = torch.randn(16, 1, 8, 8, generator=g) * 3
    eps = torch.rand(16, generator=g).view(-1, 1, 1, 1) + 0.1
    p = threat.project(d, eps)
    norm = "linf" if isinstance(threat, Linf) else "l2"
    assert (_dist(p, norm) <= eps.flatten() + 1e-6).all()
    small = d * 1e-4  # already inside: projection leaves it alone
    assert torch.allclose(threat.project(small, eps), small)
    start = threat.init(torch.zeros(16, 1, 8, 8), eps, _gen(2))
    assert (_dist(start, norm) <= eps.flatten() + 1e-6).all()


def test_generator_list_splits_the_batch(model, batch):
    x, y = batch
    spec = AttackSpec(eps=0.1, steps=0)  # random start only
    whole = pgd(model, x, y, spec, generator=[_gen(5), _gen(6)])
    first = pgd(model, x[: N // 2], y[: N // 2], spec, generator=_gen(5))
    second = pgd(model, x[N // 2:], y[N // 2:], spec, generator=_gen(6))
    assert torch.equal(whole, torch.cat([first, second]))


# ---------------------------------------------------------------- attack_grid


SPEC = AttackSpec(eps=0.0, steps=5, seed=0)


def test_grid_eps_zero_is_the_clean_logits(model, batch):
    x, y = batch
    out = attack_grid(model, x, y, SPEC, [0.0, 0.1], batch_size=40)
    with torch.no_grad():
        clean = model(x)
    assert set(out) == {0.0, 0.1}
    assert torch.allclose(out[0.0], clean, atol=1e-5)
    assert out[0.1].shape == clean.shape and not torch.allclose(out[0.1], clean, atol=1e-2)


@pytest.mark.parametrize("batch_size", [512, 40])
def test_grid_result_does_not_depend_on_the_other_eps(model, batch, batch_size):
    x, y = batch
    alone = attack_grid(model, x, y, SPEC, [0.1], batch_size=batch_size)
    many = attack_grid(model, x, y, SPEC, [0.05, 0.1, 0.2], batch_size=batch_size)
    assert torch.allclose(alone[0.1], many[0.1], atol=1e-5)
    # nor on their order, nor on whether clean logits are asked for too
    other = attack_grid(model, x, y, SPEC, [0.2, 0.0, 0.1], batch_size=batch_size)
    assert torch.allclose(other[0.1], alone[0.1], atol=1e-5)
    assert torch.allclose(other[0.2], many[0.2], atol=1e-5)


def test_grid_matches_a_direct_attack_in_accuracy(model, batch):
    x, y = batch
    out = attack_grid(model, x, y, SPEC, [0.0, 0.05, 0.1, 0.2])
    acc = {e: (v.argmax(1) == y).float().mean().item() for e, v in out.items()}
    assert acc[0.0] > acc[0.05] >= acc[0.1] >= acc[0.2]
    assert acc[0.2] < 0.3


def test_grid_is_deterministic_for_a_seed_and_varies_with_it(model, batch):
    x, y = batch
    a = attack_grid(model, x, y, SPEC, [0.05, 0.1], batch_size=64)
    b = attack_grid(model, x, y, SPEC, [0.05, 0.1], batch_size=64)
    assert all(torch.equal(a[e], b[e]) for e in a)
    c = attack_grid(model, x, y, AttackSpec(eps=0.0, steps=5, seed=1), [0.05, 0.1], batch_size=64)
    assert not torch.equal(a[0.1], c[0.1])
    d = attack_grid(model, x, y, SPEC, [0.05, 0.1], batch_size=64, seed_offset=1)
    assert not torch.equal(a[0.1], d[0.1])


def test_grid_progress_callback(model, batch):
    x, y = batch
    calls = []
    attack_grid(model, x, y, SPEC, [0.0, 0.1, 0.2], batch_size=512, on_batch=lambda d, n: calls.append((d, n)))
    assert calls == [(1, 1)]  # everything fits in one batch
    calls.clear()
    attack_grid(model, x, y, SPEC, [0.0, 0.1, 0.2], batch_size=16, on_batch=lambda d, n: calls.append((d, n)))
    total = calls[-1][1]
    assert total >= N // 16 and calls == [(i, total) for i in range(1, total + 1)]


def test_grid_leaves_model_alone(digits, batch):
    torch.manual_seed(0)
    m = build_model("digits_cnn", digits.shape, 10, digits.mean, digits.std).train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x, y = batch
    attack_grid(m, x[:16], y[:16], SPEC, [0.0, 0.1])
    assert m.training and all(p.grad is None for p in m.parameters())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_ce_loss_is_per_sample_cross_entropy():
    logits = torch.randn(5, 4, generator=_gen())
    y = torch.tensor([0, 1, 2, 3, 0])
    assert torch.allclose(ce_loss(logits, y), F.cross_entropy(logits, y, reduction="none"))
    assert ce_loss(logits, y).shape == (5,)


# --- precision of the attack's gradient steps -----------------------------------------------------

def test_attack_precision_follows_the_hardware_and_the_setting(monkeypatch):
    from core.engine import models
    from core.errors import LogitscopeError

    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: True)
    assert models.attack_dtype("cpu") == torch.bfloat16
    with models.attack_autocast("cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    monkeypatch.setenv(models.PRECISION_ENV, "float32")
    assert models.attack_dtype("cpu") == torch.float32
    with models.attack_autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")
    monkeypatch.delenv(models.PRECISION_ENV)
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: False)  # emulated bf16 would be slower
    with models.attack_autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setenv(models.PRECISION_ENV, "half")
    with pytest.raises(LogitscopeError, match="use auto or float32"):
        models.attack_autocast("cpu")


def test_bfloat16_steps_still_give_float32_examples_in_the_box(model, digits, monkeypatch):
    from core.engine import models

    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: True)
    x, y = digits.x_test[:N], digits.y_test[:N]
    x_adv = pgd(model, x, y, AttackSpec(eps=0.1, steps=5))
    assert x_adv.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    logits = attack_grid(model, x, y, AttackSpec(eps=0.1, steps=5), [0.0, 0.1])
    assert logits[0.1].dtype == torch.float32
