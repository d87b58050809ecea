"""Several models of one architecture as one module, for training them together in one pass.

`ModelGroup(models)` stacks their parameters (`torch.func.stack_module_state`: each becomes one tensor
(M, ...)) and runs `torch.func.vmap` over `torch.func.functional_call` of the shared architecture. Its
input is the M models' batches one after another, (M * B, C, H, W), and so is its output, (M * B, K):
rows m*B .. (m+1)*B - 1 belong to model m. Everything that works on rows (PGD, cross-entropy, KL) then
works unchanged, and since no row mixes models, the gradient of a summed loss reaches each model's
slice of the stacked parameters exactly as it would reach the model alone.

Where it pays: on a GPU, where one small model cannot fill the device (the digits CNN at batch 64 uses a
fraction of it), M models cost about as much as one. On a CPU the work is the same arithmetic, and the
vmapped convolutions run slower than M plain ones (measured on the digits CNN, one thread: 7.0 ms against
4.9 ms per model and step), so `core.study.recipes` groups models only where `grouping_pays(device)`.

Example:
    >>> group = ModelGroup([net_a, net_b])          # two digits CNNs
    >>> logits = group(torch.cat([xa, xb]))         # (2 * B, 10): rows of xa through net_a, xb through net_b
    >>> group.write_back()                          # copy the trained stacked weights into net_a and net_b
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from core.errors import LogitscopeError

GROUP_ENV = "LOGITSCOPE_GROUP_TRAINING"  # "auto" (default: on CUDA only), "on" or "off"


def groupable(model: nn.Module) -> bool:
    """Whether a model can train in a group: no BatchNorm (its running statistics are updated in place,
    which vmap over stacked buffers does not do) and nothing but parameters and buffers as state."""
    return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def grouping_pays(device: str | torch.device) -> bool:
    """Train models of one configuration together on this device? LOGITSCOPE_GROUP_TRAINING=on/off decides;
    by default ("auto") only on CUDA, where it fills the device (see the module's docstring for the CPU)."""
    choice = os.environ.get(GROUP_ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto", "on", "off"):
        raise LogitscopeError(f"{GROUP_ENV}={choice!r} is not a setting: use auto, on or off.")
    if choice != "auto":
        return choice == "on"
    return torch.device(device).type == "cuda"


class ModelGroup(nn.Module):
    """M models of one architecture, evaluated together: (M * B, ...) in, (M * B, K) out, model-major."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        if not models:
            raise ValueError("a group needs at least one model")
        shapes = [[(k, tuple(v.shape)) for k, v in m.state_dict().items()] for m in models]
        if any(s != shapes[0] for s in shapes):
            raise LogitscopeError("Models trained together must share one architecture and input shape.")
        if not all(groupable(m) for m in models):
            raise LogitscopeError("Models with BatchNorm cannot train in a group: train them one by one.")
        self.models = list(models)  # a plain list: their own parameters are not this module's
        for model in self.models:
            model.train(self.models[0].training)
        params, buffers = stack_module_state(self.models)
        # Contiguous stacked tensors: the vmapped convolutions and their pooling are much slower on views
        # in the channels-last order the models keep their own weights in.
        self.stacked = nn.ParameterDict({_safe(k): nn.Parameter(v.detach().contiguous()) for k, v in params.items()})
        self._names = {_safe(k): k for k in params}
        self._buffers_stacked = {k: v.contiguous() for k, v in buffers.items()}
        self._base = [models[0]]  # the architecture functional_call runs; its mode is the group's

    @property
    def size(self) -> int:
        return len(self.models)

    def train(self, mode: bool = True) -> "ModelGroup":
        super().train(mode)
        for model in self.models:
            model.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (M * B, C, H, W), model m's batch at rows m*B .. (m+1)*B - 1 -> logits (M * B, K)."""
        m = self.size
        if x.shape[0] % m:
            raise ValueError(f"a group of {m} models needs a multiple of {m} rows, got {x.shape[0]}")
        params = {self._names[k]: v for k, v in self.stacked.items()}
        xs = x.reshape(m, x.shape[0] // m, *x.shape[1:])
        out = vmap(lambda p, b, xb: functional_call(self._base[0], (p, b), (xb,)))(params, self._buffers_stacked, xs)
        return out.reshape(x.shape[0], *out.shape[2:])

    def write_back(self) -> list[nn.Module]:
        """Copy every model's slice of the stacked weights into the model itself; returns the models."""
        with torch.no_grad():
            for i, model in enumerate(self.models):
                state = {self._names[k]: v[i] for k, v in self.stacked.items()}
                state.update({k: v[i] for k, v in self._buffers_stacked.items()})
                for name, tensor in model.state_dict().items():
                    tensor.copy_(state[name])
        return self.models


def _safe(name: str) -> str:
    """A parameter's dotted name as a ParameterDict key (dots are not allowed there)."""
    return name.replace(".", "__")
