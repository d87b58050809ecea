"""The dataset registry: what a dataset is, and how plugins add theirs.

Every loader returns float32 images in [0, 1], shape (N, C, H, W), int64 labels, and class names.
A plugin module (`data_digits`, `data_torchvision`, `data_own`) imports this registry and adds its
loaders with `@register(...)` or `@register_scheme(...)`; `core.engine.data` imports every plugin
and is where the rest of Logitscope gets datasets from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from core.config import DataSpec, stable_key
from core.errors import LogitscopeError


@dataclass(frozen=True)
class Dataset:
    """Both splits of one dataset, held in memory as tensors (small datasets skip DataLoaders)."""

    name: str
    x_train: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per-channel statistics of x_train, for the model's Normalize layer
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    def split(self, spec: DataSpec) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of the split a DataSpec names, cut to its limit."""
        x, y = (self.x_train, self.y_train) if spec.split == "train" else (self.x_test, self.y_test)
        if spec.limit is not None:
            x, y = x[: spec.limit], y[: spec.limit]
        return x, y


Loader = Callable[..., Dataset]
DATASETS: dict[str, Loader] = {}
DESCRIPTIONS: dict[str, str] = {}
CLASSES: dict[str, tuple[str, ...]] = {}  # class names known without loading the images


def register(name: str, description: str, classes: tuple[str, ...] | None = None) -> Callable[[Loader], Loader]:
    """Add a loader `(data_dir: str | None) -> Dataset` to the registry.

    `classes`: the class names, when they are fixed; `dataset_classes` then answers without loading.
    """

    def wrap(fn: Loader) -> Loader:
        DATASETS[name] = fn
        DESCRIPTIONS[name] = description
        if classes is not None:
            CLASSES[name] = tuple(classes)
        return fn

    return wrap


Opener = Callable[[str, str | None], Dataset]  # (path, data_dir) -> Dataset
SCHEMES: dict[str, Opener] = {}
SCHEME_DESCRIPTIONS: dict[str, str] = {}


def register_scheme(prefix: str, description: str) -> Callable[[Opener], Opener]:
    """Add an opener for dataset names "<prefix>:<path>" (your own data), resolved by `load_dataset`."""

    def wrap(fn: Opener) -> Opener:
        SCHEMES[prefix] = fn
        SCHEME_DESCRIPTIONS[prefix] = description
        return fn

    return wrap


def dataset_scheme(name: str) -> str | None:
    """The scheme of a name like "npz:/data/x.npz" ("npz"), or None for a registered name."""
    prefix, sep, _ = name.partition(":")
    return prefix if sep and prefix in SCHEMES and name not in DATASETS else None


def dataset_folder(name: str) -> str:
    """A file-system-safe folder name for a dataset: the name itself, or "<scheme>-<hash>" for own data."""
    scheme = dataset_scheme(name)
    return name if scheme is None else f"{scheme}-{stable_key(name)}"


def is_dataset_name(name: str) -> bool:
    """True for a registered dataset or a "<scheme>:<path>" name (the path is checked on loading)."""
    return name in DATASETS or dataset_scheme(name) is not None


MAX_CLASSES = 1000  # ImageNet's count: a bound that keeps a stray label (say 10**12) from building 10**12 names


def check_class_count(k: int, where: str) -> None:
    """A classifier needs 2 to MAX_CLASSES classes: raise LogitscopeError, saying what to do, otherwise."""
    if k < 2:
        raise LogitscopeError(f"{where}: there is only {k} class; a classifier needs at least 2. Add images of "
                              "another class (labels 0..K-1).")
    if k > MAX_CLASSES:
        raise LogitscopeError(f"{where}: {k:,} classes (labels up to {k - 1:,}); Logitscope takes at most "
                              f"{MAX_CLASSES:,}. Number the classes 0..K-1 without gaps.")


def make_dataset(name: str, x_train, y_train, x_test, y_test, classes) -> Dataset:
    """Build a Dataset from arrays, checking ranges and computing normalisation statistics."""
    check_class_count(len(classes), name)
    x_train = torch.as_tensor(x_train, dtype=torch.float32).contiguous()
    x_test = torch.as_tensor(x_test, dtype=torch.float32).contiguous()
    y_train = torch.as_tensor(y_train, dtype=torch.int64)
    y_test = torch.as_tensor(y_test, dtype=torch.int64)
    for label, x in (("train", x_train), ("test", x_test)):
        if x.ndim != 4:
            raise LogitscopeError(f"{name}: {label} images must have shape (N, C, H, W), got {tuple(x.shape)}.")
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise LogitscopeError(f"{name}: {label} images must be scaled to [0, 1].")
    k = len(classes)
    for label, y in (("train", y_train), ("test", y_test)):
        if y.numel() and (y.min() < 0 or y.max() >= k):
            raise LogitscopeError(f"{name}: {label} labels must lie in [0, {k - 1}] for {k} classes.")
    mean = x_train.mean(dim=(0, 2, 3))
    std = x_train.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return Dataset(name, x_train, y_train, x_test, y_test, tuple(str(c) for c in classes),
                   tuple(mean.tolist()), tuple(std.tolist()))
