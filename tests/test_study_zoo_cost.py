"""The zoo's cost on paper: FLOPs on the meta device, units as precompute plans them, wall time on N GPUs."""

import math
import socket

import pytest
import torch
from torch import nn

from core.engine.zoo import import_robustbench
from core.study import zoo_cost as zc
from core.study import zoo_flops as zf
from core.study.evidence import evidence
from core.study.hyper import eps_grid
from core.study.recipes import zoo_recipe

NAMES = ("Wong2020Fast", "Standard", "Debenedetti2022Light_XCiT-S12")  # measured, measured, a timm fallback


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and no RobustBench download: any attempt raises."""
    rbu = import_robustbench().utils  # robustbench imports `autoattack`, which import_robustbench provides

    def refuse(*args, **kwargs):
        raise AssertionError("the dry run tried to download")

    for name in ("download_gdrive", "download_gdrive_new", "load_model"):
        if hasattr(rbu, name):
            monkeypatch.setattr(rbu, name, refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return tmp_path


def test_forward_flops_of_a_small_net_by_hand():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 32 * 32, 10, bias=False))
    conv = 2 * (8 * 32 * 32) * (3 * 3 * 3)  # a multiply-add per output value and kernel weight
    linear = 2 * (8 * 32 * 32) * 10
    with torch.device("meta"):
        net = net.to("meta")
    assert zf.forward_flops(net, (3, 32, 32)) == conv + linear


def test_zoo_model_measured_on_meta_and_fallback(offline):
    wong = zf.zoo_model_cost("cifar10", "Linf", "Wong2020Fast")
    assert wong.source == "measured on meta" and wong.family == "ResNet-18"
    assert 1.0 < wong.gflops < 1.2  # PreActResNet-18 at 32x32: 0.56 G multiply-adds
    assert 11e6 < wong.params < 11.5e6 and wong.checkpoint_bytes == 4 * wong.params
    xcit = zf.zoo_model_cost("cifar10", "Linf", "Debenedetti2022Light_XCiT-S12")
    assert xcit.gflops == zf.FAMILY_FALLBACK["XCiT-S12"][0] and "assumption" in xcit.source


def test_units_are_models_x_eps_x_chunks_and_nothing_is_written(offline):
    cache = offline / "cache"
    recipes = [zoo_recipe(n) for n in NAMES]
    grid = eps_grid("cifar10")
    small = zc.estimate(recipes, grid, 1000, 170, 20)
    big = zc.estimate(recipes, grid, 10_000, 170, 20)
    chunks = math.ceil(10_000 / (math.ceil(1024 / 170) * 170))  # precompute's chunks: whole batches of >= 1024
    assert len(small.units) == len(NAMES) * len(grid)
    assert len(big.units) == len(NAMES) * len(grid) * chunks
    assert math.isclose(big.total_flops, 10 * small.total_flops, rel_tol=1e-9)
    wong = [u for u in small.units if u.unit.model == "rb:Wong2020Fast"]
    clean = [u for u in wong if u.unit.eps == 0][0]
    attacked = [u for u in wong if u.unit.eps > 0][0]
    assert attacked.passes == 61 and clean.passes == 1  # PGD-20: 21 forwards + 20 backwards of 2
    assert math.isclose(attacked.flops, 61 * clean.flops)
    assert not cache.exists() or not any(cache.rglob("*"))


def test_evidence_adds_one_unit_per_model(offline):
    recipes = [zoo_recipe(n) for n in NAMES[:2]]
    ev = evidence("cifar10")
    plain = zc.estimate(recipes, eps_grid("cifar10"), 1000, 170, 20)
    full = zc.estimate(recipes, eps_grid("cifar10"), 1000, 170, 20, evidence=ev)
    assert len(full.units) == len(plain.units) + len(recipes)
    assert full.gpu_hours > plain.gpu_hours


def test_autoattack_passes_by_hand():
    pub = zc.Published(clean=0.8, autoattack=0.5, eps=8 / 255, architecture="ResNet-18")
    assert zc.autoattack_passes(pub) == 1 + 0.8 * 100 * 3 + 0.5 * 9 * 100 * 3
    assert zc.autoattack_passes(None) == 1 + 100 * 3 + 9 * 100 * 3  # unknown: every image correct, surviving


def test_schedule_on_n_gpus():
    jobs = [5.0, 4.0, 3.0, 3.0, 2.0, 1.0]
    assert zc.schedule(jobs, 1) == sum(jobs)
    assert zc.schedule(jobs, 2) == 9.0  # 5+3+1 | 4+3+2
    assert zc.schedule(jobs, 100) == max(jobs)
    for n in (2, 3, 8):
        assert sum(jobs) / n <= zc.schedule(jobs, n) <= sum(jobs)
    with pytest.raises(ValueError):
        zc.schedule(jobs, 0)


def test_wall_time_shrinks_with_gpus(offline):
    est = zc.estimate([zoo_recipe(n) for n in NAMES], eps_grid("cifar10"), 10_000, 170, 20)
    one, eight = est.wall_seconds(1), est.wall_seconds(8)
    assert math.isclose(one, est.gpu_hours * 3600)
    assert one / 8 <= eight < one


def test_family_names():
    assert zf.family("MeanSparse RaWideResNet-70-16") == "RaWideResNet-70-16"
    assert zf.family("WRN-28-10-PSSiLU") == "WideResNet-28-10"
    assert zf.family("WideResNet-70-16, Neural ODE block") == "WideResNet-70-16"
    assert zf.family(None) == "unknown"
