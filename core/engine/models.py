"""Architectures, normalisation inside the model, and self-describing checkpoints.

Every model maps float inputs in [0, 1], shape (N, C, H, W), to logits (N, K): normalisation is the
model's first layer, so attacks and epsilons always live in pixel units.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from core.config import ModelSpec
from core.errors import LogitscopeError
from core.storage import atomic_write, digest, verified

CHECKPOINT_FORMAT = "logitscope-checkpoint/2"  # /2 adds the sha256 of the config and the weights
READABLE_CHECKPOINTS = (CHECKPOINT_FORMAT, "logitscope-checkpoint/1")  # /1: no checksum, still loads


class Normalize(nn.Module):
    """(x - mean) / std per channel; buffers, so they move with the model and are saved with it."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


Builder = Callable[[tuple[int, int, int], int], nn.Module]
ARCHS: dict[str, Builder] = {}


def register_arch(name: str) -> Callable[[Builder], Builder]:
    """Add a builder `(in_shape (C, H, W), num_classes) -> nn.Module` (without Normalize)."""

    def wrap(fn: Builder) -> Builder:
        ARCHS[name] = fn
        return fn

    return wrap


@register_arch("digits_cnn")
def digits_cnn(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """A small CNN for 8x8 inputs: two conv stages (8x8 -> 4x4 -> 2x2) and a linear head.

    About 25k parameters: big enough for ~99% on digits, small enough that PGD-AT trains in seconds
    on a laptop CPU. No BatchNorm, so train and eval modes compute the same function.
    """
    c, h, w = in_shape
    return nn.Sequential(
        nn.Conv2d(c, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # (32, H/2, W/2)
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # (64, H/4, W/4)
        nn.Flatten(),
        nn.Linear(64 * (h // 4) * (w // 4), 64), nn.ReLU(),
        nn.Linear(64, num_classes),
    )


@register_arch("mlp")
def mlp(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """A two-layer perceptron: the simplest non-linear baseline for any input size."""
    c, h, w = in_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 256), nn.ReLU(), nn.Linear(256, num_classes))


def build_model(arch: str, in_shape: tuple[int, int, int], num_classes: int,
                mean: tuple[float, ...], std: tuple[float, ...]) -> nn.Sequential:
    """Normalize followed by the named architecture."""
    if arch not in ARCHS:
        raise LogitscopeError(f"Unknown architecture {arch!r}: choose one of {', '.join(sorted(ARCHS))}.")
    model = nn.Sequential(Normalize(mean, std), ARCHS[arch](tuple(in_shape), num_classes))
    # Convolution weights in channels-last (NHWC) order make every activation NHWC too, whatever the
    # input's layout, and oneDNN's convolutions and max-pooling run much faster that way on a CPU (PGD
    # on the digits CNN takes 0.7x the time; `python -m bench --only pgd_throughput`). Same function,
    # same state_dict keys and shapes; checkpoints are saved contiguous.
    return model.to(memory_format=torch.channels_last)


def save_checkpoint(path: str | Path, model: nn.Module, config: dict) -> Path:
    """Write weights plus the configuration needed to rebuild the model, atomically.

    `config` must hold arch, in_shape, num_classes, mean and std; anything else JSON-able
    (the training spec, metrics) rides along and comes back from `read_checkpoint_config`.
    """
    for field in ("arch", "in_shape", "num_classes", "mean", "std"):
        if field not in config:
            raise ValueError(f"checkpoint config lacks {field!r}")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    text = json.dumps(config)
    payload = {"format": CHECKPOINT_FORMAT, "config": text, "state_dict": state, "sha256": _checksum(text, state)}
    buffer = io.BytesIO()
    torch.save(payload, buffer)  # in memory first: a full disk then fails as an OSError in atomic_write
    return atomic_write(path, buffer.getvalue())


def _checksum(config: str, state: dict[str, torch.Tensor]) -> str:
    return hashlib.sha256(config.encode() + digest(state).encode()).hexdigest()


def _read(path: str | Path) -> dict:
    """The checked payload: loaded without unpickling code (weights_only), right format, intact checksum."""
    path = Path(path)
    if not path.is_file():
        raise LogitscopeError(f"No checkpoint at {path}: train the model first or check the path.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or holding non-tensor objects
        raise LogitscopeError(f"Cannot read checkpoint {path} ({type(exc).__name__}): delete it and train again.") from exc
    if not isinstance(payload, dict) or payload.get("format") not in READABLE_CHECKPOINTS:
        raise LogitscopeError(f"{path} is not a Logitscope checkpoint ({CHECKPOINT_FORMAT}).")
    state = payload.get("state_dict")
    if not isinstance(payload.get("config"), str) or not isinstance(state, dict) \
            or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise LogitscopeError(f"{path} is not a Logitscope checkpoint: it lacks its configuration or weights.")
    if payload["format"] == CHECKPOINT_FORMAT and payload.get("sha256") != _checksum(payload["config"],
                                                                                   payload["state_dict"]):
        raise LogitscopeError(f"Checkpoint {path} is corrupt (checksum mismatch): delete it and train again.")
    return payload


def checkpoint_ok(path: str | Path, key: str | None = None) -> bool:
    """True if `path` is an intact checkpoint that rebuilds its model (and holds the model `key`, when
    given); checked once per version of the file, then a stat. A bad one is reported once in the log
    and counts as missing (`core.study.recipes.ensure_model` retrains it).
    """
    return verified(path, lambda p: load_checkpoint(p, key=key), action="training the model again",
                    expect=key or "")


def _check_identity(path: str | Path, cfg: dict, key: str) -> None:
    """Raise unless the checkpoint's stored key, and the key of the spec it was trained from, are `key`.

    The checksum proves a file intact, not that it is the right file: a checkpoint copied over another
    model's path passes it. Checkpoints without a stored key or spec (written by hand with
    save_checkpoint) cannot be matched and are refused when a key is expected.
    """
    from_spec = None
    if isinstance(cfg.get("spec"), dict):
        try:
            from_spec = ModelSpec.from_dict(cfg["spec"]).key()
        except (LogitscopeError, TypeError, ValueError) as exc:
            raise LogitscopeError(f"Checkpoint {path} stores an unreadable training spec ({exc}): delete it and "
                                  "train again.") from exc
    stored = cfg.get("key")
    if stored != key or (from_spec is not None and from_spec != key):
        what = f"model {stored!r}" + (f" ({cfg['name']})" if cfg.get("name") else "") if stored else "no model key"
        raise LogitscopeError(f"Checkpoint {path} holds {what}, not model {key!r}: it was copied or moved there. "
                              "It counts as missing: delete it, or let Logitscope train the model again.")


def read_checkpoint_config(path: str | Path) -> dict:
    """The configuration stored with a checkpoint."""
    return json.loads(_read(path)["config"])


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", key: str | None = None) -> nn.Module:
    """Rebuild a model from its checkpoint, in eval mode: float [0, 1] (N, C, H, W) -> logits (N, K).

    With `key`, the checkpoint must also hold that model (its stored key and training spec): a file
    copied over another model's path raises LogitscopeError instead of standing in for it.
    """
    payload = _read(path)
    try:
        cfg = json.loads(payload["config"])
        if key is not None:
            _check_identity(path, cfg, key)
        model = build_model(cfg["arch"], tuple(cfg["in_shape"]), cfg["num_classes"], tuple(cfg["mean"]),
                            tuple(cfg["std"]))
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as exc:  # a foreign or hand-edited config
        raise LogitscopeError(f"Checkpoint {path} has an unusable configuration ({type(exc).__name__}: {exc}): "
                              "delete it and train again.") from exc
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise LogitscopeError(f"Checkpoint {path} does not match architecture {cfg['arch']!r}: delete it and train again.") from exc
    return model.to(device).eval()


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" picks CUDA, then Apple MPS, then CPU; any other name is checked and used as given."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise LogitscopeError(f"Unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps.") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LogitscopeError("CUDA was asked for but is not available: use --device cpu or auto.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise LogitscopeError("Apple MPS was asked for but is not available: use --device cpu or auto.")
    return device


PRECISION_ENV = "LOGITSCOPE_ATTACK_PRECISION"  # "auto" (default) or "float32"
TRAIN_PRECISION_ENV = "LOGITSCOPE_TRAIN_PRECISION"  # "auto" (default) or "float32"


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True on CPUs that compute bfloat16 natively (x86 AVX512-BF16 or AMX, read from Linux's /proc/cpuinfo).

    Elsewhere oneDNN would emulate bfloat16, which is slower than float32.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) is not None


def attack_autocast(device: str | torch.device) -> contextlib.AbstractContextManager:
    """The precision of an attack's gradient steps: bfloat16 where the hardware computes it natively, else float32.

    bfloat16 on CUDA GPUs that support it and on CPUs with AVX512-BF16 or AMX (twice as fast as float32
    on the digits CNN and on ResNet-18); float32 elsewhere, or everywhere with
    LOGITSCOPE_ATTACK_PRECISION=float32. Only the direction of each step depends on it (for Linf, the
    gradient's sign); the logits that are stored are always computed in float32. On the digits study,
    from the same random starts, bfloat16 PGD-20 leaves -0.3 to +0.4 of 360 test images more correct
    on average than float32 (10 models x 4 starts, eps 0.1/0.15/0.2; -1 to +3 per start on three of
    them), while float32 PGD-20 alone moves by 3 to 8 images from one random start to another.
    """
    device = torch.device(device)
    if attack_dtype(device) == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def attack_dtype(device: str | torch.device) -> torch.dtype:
    """bfloat16 or float32: the precision `attack_autocast` gives an attack on this device."""
    return _native_dtype(PRECISION_ENV, device)


def train_dtype(device: str | torch.device) -> torch.dtype:
    """bfloat16 or float32: the precision `train_autocast` gives a training step on this device."""
    return _native_dtype(TRAIN_PRECISION_ENV, device)


def train_autocast(device: str | torch.device) -> contextlib.AbstractContextManager:
    """The precision of a training step's forward pass: bfloat16 autocast where the hardware computes it natively.

    As `attack_autocast`, with its own switch LOGITSCOPE_TRAIN_PRECISION (auto or float32). The weights,
    their gradients and Adam's state stay float32 (autocast casts a copy per operation), and bfloat16
    keeps float32's exponent range, so no loss scaling is needed. On the default digits study the clean
    and robust accuracies stay within the tolerance tests/test_engine_train.py states.
    """
    if train_dtype(device) == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def _native_dtype(env: str, device: str | torch.device) -> torch.dtype:
    """bfloat16 where the device computes it natively (and `env` does not say float32), else float32."""
    choice = os.environ.get(env, "auto").strip().lower() or "auto"
    if choice not in ("auto", "float32"):
        raise LogitscopeError(f"{env}={choice!r} is not a precision: use auto or float32.")
    device = torch.device(device)
    if choice == "auto" and device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    if choice == "auto" and device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


@register_arch("small_cnn")
def small_cnn(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Four 3x3 convolutions in two stages (H -> H/2 -> H/4) and a 128-unit head, for 28x28 and 32x32.

    About 0.47M parameters on MNIST and 0.59M on CIFAR-10: PGD-AT of a few epochs on a CPU subset is
    feasible. No BatchNorm, like digits_cnn, so train and eval modes compute the same function.
    """
    c, h, w = in_shape
    if h < 4 or w < 4:
        raise LogitscopeError(f"small_cnn needs images of at least 4x4 pixels, got {h}x{w}: use digits_cnn or mlp.")
    return nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # (32, H/2, W/2)
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # (64, H/4, W/4)
        nn.Flatten(),
        nn.Linear(64 * (h // 4) * (w // 4), 128), nn.ReLU(),
        nn.Linear(128, num_classes),
    )


class PreActBlock(nn.Module):
    """BN-ReLU-conv twice, plus the identity (a 1x1 conv when the shape changes) (He et al. 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut = (nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
                         if stride != 1 or c_in != c_out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv2(torch.relu(self.bn2(self.conv1(pre))))
        return out + skip


class PreActResNet(nn.Module):
    """Pre-activation ResNet for small images: a 3x3 stem, four stages, global average pooling."""

    def __init__(self, in_channels: int, num_classes: int, blocks: tuple[int, ...] = (2, 2, 2, 2),
                 widths: tuple[int, ...] = (64, 128, 256, 512)):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        layers, c = [], widths[0]
        for stage, (n, width) in enumerate(zip(blocks, widths)):
            for i in range(n):
                layers.append(PreActBlock(c, width, 2 if stage > 0 and i == 0 else 1))
                c = width
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(c)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, K); 32x32 inputs leave 4x4 maps before the pooling."""
        out = torch.relu(self.bn(self.layers(self.stem(x))))
        return self.head(out.mean(dim=(2, 3)))


@register_arch("preact_resnet18")
def preact_resnet18(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The CIFAR PreAct ResNet-18 of the AT literature (Rice et al. 2020, Wong et al. 2020): 11.2M parameters.

    It has BatchNorm: attacks run with the model in eval mode (running statistics), as everywhere here.
    A GPU model; on a CPU prefer small_cnn.
    """
    return PreActResNet(in_shape[0], num_classes)
