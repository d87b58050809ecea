"""Forward cost of a model per image, measured without weights or downloads: for the zoo's dry run.

Each architecture is built on PyTorch's meta device (shapes, no memory, no weights) and its FLOPs are counted
(`torch.utils.flop_counter.FlopCounterMode`, a multiply-add counts 2) on one meta image; zoo models come from
RobustBench's own constructors (`model_dicts[...][name]["model"]()`), never from `load_model`. A constructor
that would download weights (timm-fetched models: no checkpoint file) is not called, and one that fails on meta
(a `.item()` in its forward, a `.cuda()` in its constructor) is not retried: both take their family's cost from
`FAMILY_FALLBACK` (architecture from `core.engine.zoo_info`), and `ModelCost.source` says which.
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from core.engine.models import build_model
from core.engine.zoo import INPUT_SHAPES, find_entry, import_robustbench
from core.engine.zoo_info import Published, published
from core.study.recipes import Recipe

BYTES_PER_PARAM = 4     # fp32 checkpoints

# Family -> (GFLOPs per image, millions of parameters), for models whose constructor is not run on meta.
# Measured once with FlopCounterMode on one 32x32 image: XCiT on timm's registered
# debenedetti2022light_xcit_*_cifar10_linf built without weights (RobustBench 1.1.1's constructors name an
# unregistered model and download weights); the others on RobustBench's constructors on a CPU with random
# weights (the mixtures with .cuda() disabled). "WideResNet-70-16" (Kang2021Stable's backbone) leaves out
# its neural-ODE head, about 3% more.
FAMILY_FALLBACK: dict[str, tuple[float, float]] = {
    "XCiT-S12": (3.13, 25.9),
    "XCiT-M12": (5.55, 45.9),
    "XCiT-L12": (12.37, 103.0),
    "WideResNet-70-16": (77.53, 266.9),
    "WideResNet-94-16": (106.52, 365.9),
    "RaWideResNet-70-16": (120.94, 267.2),
    "ResNet-152 + WideResNet-70-16": (150.85, 499.5),
    "ResNet-152 + WideResNet-70-16 + mixing network": (117.18, 566.9),
}


@dataclass(frozen=True)
class ModelCost:
    """One model's forward cost: GFLOPs per image (None: unknown), parameters, and where they come from."""

    name: str                 # the recipe's name ("rb:<name>" for zoo models)
    family: str               # architecture family, for grouping
    gflops: float | None
    params: int | None
    source: str               # "measured on meta" or why the family's assumption is used
    published: Published | None = None
    zoo: bool = False

    @property
    def checkpoint_bytes(self) -> int:
        return (self.params or 0) * BYTES_PER_PARAM


def forward_flops(net: nn.Module, in_shape: Sequence[int]) -> int:
    """FLOPs of one forward pass of `net` on one image of shape (C, H, W), on the meta device (a multiply-add is 2)."""
    counter = FlopCounterMode(display=False)
    with torch.device("meta"), counter, torch.no_grad():
        net(torch.empty((1, *in_shape)))
    return int(counter.get_total_flops())


def family(architecture: str | None) -> str:
    """An architecture family from RobustBench's architecture string: "MeanSparse RaWideResNet-70-16" ->
    "RaWideResNet-70-16", "WRN-28-10-PSSiLU" -> "WideResNet-28-10", "WideResNet-70-16, Neural ODE block" ->
    "WideResNet-70-16"."""
    if not architecture:
        return "unknown"
    arch = architecture.split(",")[0].replace("MeanSparse ", "").strip()
    arch = re.sub(r"^WRN-", "WideResNet-", arch)
    return re.sub(r"^(WideResNet-\d+-\d+)-.*$", r"\1", arch)


def _signature(net: nn.Module) -> tuple:
    return type(net).__name__, tuple(tuple(p.shape) for p in net.parameters())


_FLOPS_BY_SIGNATURE: dict[tuple, int] = {}  # many zoo models share an architecture: count it once


def _flops(net: nn.Module, in_shape: tuple[int, ...]) -> int:
    key = (_signature(net), in_shape)
    if key not in _FLOPS_BY_SIGNATURE:
        _FLOPS_BY_SIGNATURE[key] = forward_flops(net.eval(), in_shape)
    return _FLOPS_BY_SIGNATURE[key]


@lru_cache(maxsize=None)
def zoo_model_cost(dataset: str, threat: str, name: str) -> ModelCost:
    """A zoo model's cost, its constructor run on meta (see the module docstring); cached per model."""
    entry = find_entry(name, dataset, threat)
    pub = published(dataset, threat, name)
    fam = family(pub.architecture if pub else None)
    label = f"rb:{name}" if threat == "Linf" else f"rb:{threat}:{name}"
    import_robustbench()
    from robustbench.model_zoo import model_dicts  # importable once import_robustbench has run
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    build = model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat)][name]["model"]
    params, why = None, None
    if entry.checkpoints == 0:
        why = "its constructor downloads the weights (timm)"
    else:
        try:
            with torch.device("meta"), contextlib.redirect_stdout(io.StringIO()):  # some constructors print
                net = build()
            params = sum(p.numel() for p in net.parameters())
            flops = _flops(net, INPUT_SHAPES[dataset])
            return ModelCost(label, fam, flops / 1e9, params, "measured on meta", pub, zoo=True)
        except Exception as exc:  # noqa: BLE001 - any failure of third-party code on meta means: use the family
            first = " ".join(str(exc).split()).split(". ")[0][:70]
            why = f"it fails on meta ({type(exc).__name__}: {first})"
    if fam in FAMILY_FALLBACK:
        gflops, mparams = FAMILY_FALLBACK[fam]
        return ModelCost(label, fam, gflops, params or int(mparams * 1e6), f"{fam} assumption: {why}", pub, zoo=True)
    return ModelCost(label, fam, None, params, f"unknown: {why}, no assumption for {fam}", pub, zoo=True)


def local_model_cost(recipe: Recipe, in_shape: Sequence[int], num_classes: int = 10) -> ModelCost:
    """A local recipe's forward cost, its architecture built on meta."""
    with torch.device("meta"):
        net = build_model(recipe.spec.arch, tuple(in_shape), num_classes, (0.0,) * in_shape[0], (1.0,) * in_shape[0])
    return ModelCost(recipe.name, f"local {recipe.spec.arch}", forward_flops(net.eval(), in_shape) / 1e9,
                     sum(p.numel() for p in net.parameters()), "measured on meta")
