"""Larger architectures, fast AT (FGSM-RS), training subsets, the defaults of the real datasets, and
device selection / mixed precision as far as a CPU-only machine can check them."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from core.config import AttackSpec, TrainSpec
from core.engine.attacks import pgd
from core.engine.data import load_dataset
from core.engine.models import (
    ARCHS,
    build_model,
    cpu_has_native_bf16,
    load_checkpoint,
    resolve_device,
    save_checkpoint,
    train_autocast,
)
from core.engine.train import fast_attack, train
from core.errors import LogitscopeError
from core.study.hyper import HYPER, OWN_DATA_HYPER, hyper
from core.study.recipes import default_recipes, fast_at_recipe


@pytest.mark.parametrize("arch, shape", [("small_cnn", (1, 28, 28)), ("small_cnn", (3, 32, 32)),
                                         ("small_cnn", (3, 8, 8)), ("preact_resnet18", (3, 32, 32))])
def test_new_architectures_map_images_to_logits(arch, shape):
    torch.manual_seed(0)
    model = build_model(arch, shape, 10, (0.5,) * shape[0], (0.25,) * shape[0]).eval()
    with torch.no_grad():
        out = model(torch.rand(2, *shape))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_preact_resnet18_is_the_standard_size_and_its_checkpoint_round_trips(tmp_path):
    torch.manual_seed(0)
    model = build_model("preact_resnet18", (3, 32, 32), 10, (0.5,) * 3, (0.25,) * 3)
    # 11,172,170 parameters: the count of RobustBench's CIFAR PreAct ResNet-18s (e.g. Wong2020Fast, Rice2020Overfitting L2)
    assert sum(p.numel() for p in model.parameters()) == 11_172_170
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, 32, 32))  # moves the BatchNorm running statistics away from their init
    model.eval()
    path = save_checkpoint(tmp_path / "m.pt", model, {"arch": "preact_resnet18", "in_shape": [3, 32, 32],
                                                      "num_classes": 10, "mean": [0.5] * 3, "std": [0.25] * 3})
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_checkpoint(path)(x), model(x))


def test_small_cnn_refuses_images_smaller_than_its_pooling():
    with pytest.raises(LogitscopeError, match="at least 4x4"):
        ARCHS["small_cnn"]((1, 3, 3), 10)


def test_fgsm_needs_an_attack_and_steps_once_by_1_25_eps():
    with pytest.raises(LogitscopeError, match="needs an attack"):
        TrainSpec(method="fgsm")
    fast = fast_attack(AttackSpec(eps=0.2, steps=20, restarts=3, random_start=False))
    assert (fast.steps, fast.restarts, fast.random_start) == (1, 1, True)
    assert fast.alpha == pytest.approx(0.25)
    assert fast_attack(AttackSpec(eps=0.0)).alpha == 0.0


def test_fgsm_examples_stay_in_the_ball_and_the_box():
    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 10, (0.3,), (0.3,)).eval()
    x, y = torch.rand(64, 1, 8, 8), torch.randint(0, 10, (64,))
    x_adv = pgd(model, x, y, fast_attack(AttackSpec(eps=0.1)), generator=torch.Generator().manual_seed(0))
    delta = x_adv - x
    assert delta.abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (delta.abs() > 0.09).float().mean() > 0.3  # a 0.125 step from a uniform start: most pixels end at the rim


def _robust_accuracy(model, ds, eps=0.1):
    x, y = ds.x_test, ds.y_test
    x_adv = pgd(model, x, y, AttackSpec(eps=eps, steps=10, seed=1))
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y).float().mean().item(), (model(x).argmax(1) == y).float().mean().item()


def test_fast_at_trains_on_cpu_and_is_more_robust_than_standard_training():
    ds = load_dataset("digits")
    results = {}
    for method in ("standard", "fgsm"):
        torch.manual_seed(0)
        model = build_model("mlp", ds.shape, ds.num_classes, ds.mean, ds.std)
        spec = TrainSpec(method=method, epochs=4, lr=4e-3, attack=AttackSpec(eps=0.2, steps=1) if method == "fgsm" else None)
        train(model, ds, spec, device="cpu")
        results[method] = _robust_accuracy(model, ds)
    (rob_std, clean_std), (rob_fast, clean_fast) = results["standard"], results["fgsm"]
    assert clean_std > 0.9 and clean_fast > 0.85  # both learn the task
    assert rob_fast > rob_std + 0.08  # measured 0.78 against 0.61 at eps 0.1


def test_train_limit_uses_the_first_n_samples():
    ds = load_dataset("digits")
    seen = []
    model = build_model("mlp", ds.shape, ds.num_classes, ds.mean, ds.std)
    train(model, ds, TrainSpec(epochs=1, batch_size=50, train_limit=120), progress=lambda p: seen.append(p.batches))
    assert seen == [3, 3, 3]  # ceil(120 / 50) batches
    with pytest.raises(LogitscopeError, match="train_limit"):
        TrainSpec(train_limit=0)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_real_dataset_defaults_build_valid_recipes(name):
    h = HYPER[name]
    assert h.arch in ARCHS and h.eps_grid[0] == 0 and list(h.eps_grid) == sorted(h.eps_grid)
    assert h.train_eps in h.eps_grid and h.train_limit and h.eval_limit
    recipes = default_recipes(name)
    assert all(r.spec.train.train_limit == h.train_limit and r.spec.train.batch_size == h.batch_size for r in recipes)
    assert len({r.key for r in recipes}) == len(recipes)
    assert {r.spec.arch for r in default_recipes(name, arch="preact_resnet18")} == {"preact_resnet18"}
    fast = fast_at_recipe(name)
    assert fast.spec.train.method == "fgsm" and fast.spec.train.attack.eps == h.train_eps


def test_digits_recipes_keep_their_settings_and_own_data_gets_defaults():
    spec = default_recipes("digits")[0].spec.train
    assert (spec.batch_size, spec.train_limit, spec.epochs) == (64, None, 20)
    assert hyper("npz:/anywhere/mine.npz") is OWN_DATA_HYPER and hyper("folder:imgs") is OWN_DATA_HYPER
    with pytest.raises(LogitscopeError, match="npz:<path>"):
        hyper("svhn")


def test_resolve_device_on_this_machine():
    auto = resolve_device("auto")
    if torch.cuda.is_available():
        assert auto.type == "cuda"
    elif torch.backends.mps.is_available():
        assert auto.type == "mps"
    else:
        assert auto == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(LogitscopeError, match="Unknown device"):
        resolve_device("tpu-ish")
    if not torch.cuda.is_available():
        with pytest.raises(LogitscopeError, match="CUDA was asked for"):
            resolve_device("cuda:0")


def test_training_autocast_is_bfloat16_where_native_else_a_no_op():
    cpu = train_autocast("cpu")
    if cpu_has_native_bf16():
        assert isinstance(cpu, torch.autocast) and cpu.fast_dtype == torch.bfloat16
    else:
        assert isinstance(cpu, contextlib.nullcontext)
    assert isinstance(train_autocast(torch.device("mps")), contextlib.nullcontext)
    ctx = train_autocast("cuda")
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16
    else:
        assert isinstance(ctx, contextlib.nullcontext)  # no CUDA here, or no bfloat16: float32


def test_training_with_an_explicit_cpu_device_matches_the_default():
    ds = load_dataset("digits")
    spec = TrainSpec(epochs=1, batch_size=256, train_limit=512)
    weights = []
    for device in ("cpu", torch.device("cpu")):
        torch.manual_seed(0)
        model = build_model("mlp", ds.shape, ds.num_classes, ds.mean, ds.std)
        train(model, ds, spec, device=device)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1]) and math.isfinite(weights[0].sum().item())
