"""Dataset registry. Every loader returns float32 images in [0, 1], shape (N, C, H, W), int64 labels.

The embedded default is scikit-learn's bundled 8x8 digits: it needs no download, so the whole app
works offline on a laptop. Other datasets register themselves with `@register(...)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
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


def make_dataset(name: str, x_train, y_train, x_test, y_test, classes) -> Dataset:
    """Build a Dataset from arrays, checking ranges and computing normalisation statistics."""
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


def digits_split(target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fixed, documented digits split: 80/20, stratified, random_state=0."""
    from sklearn.model_selection import train_test_split

    return train_test_split(np.arange(len(target)), test_size=0.2, random_state=0, stratify=target)


@register("digits", "scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes); no download",
          classes=tuple("0123456789"))
def load_digits(data_dir: str | None = None) -> Dataset:
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8); pixel values are 0..16
    y = bunch.target.astype(np.int64)
    train_idx, test_idx = digits_split(y)
    return make_dataset("digits", x[train_idx], y[train_idx], x[test_idx], y[test_idx], CLASSES["digits"])


@lru_cache(maxsize=8)
def _load_cached(name: str, data_dir: str | None) -> Dataset:
    scheme = dataset_scheme(name)
    if scheme is not None:
        return SCHEMES[scheme](name.partition(":")[2], data_dir)
    return DATASETS[name](data_dir)


_PROVIDED: dict[str, Dataset] = {}


def provide(dataset: Dataset) -> None:
    """Serve `dataset` under its name from now on, in place of its loader (the hosted demo's bundled images)."""
    _PROVIDED[dataset.name] = dataset


def load_dataset(name: str, data_dir: str | None = None) -> Dataset:
    """The named dataset, or your own data as "npz:<path>" / "folder:<path>" (memoised per process)."""
    if name in _PROVIDED:
        return _PROVIDED[name]
    if not is_dataset_name(name):
        own = ", ".join(f"{p}:<path>" for p in sorted(SCHEMES))
        raise LogitscopeError(f"Unknown dataset {name!r}: choose one of {', '.join(sorted(DATASETS))}"
                              + (f", or your own data as {own}." if own else "."))
    return _load_cached(name, data_dir)


def dataset_classes(name: str, data_dir: str | None = None) -> tuple[str, ...]:
    """The class names of a dataset, without loading its images when they are fixed (digits, MNIST).

    Pages that show cached logits need only the names; loading digits would import scikit-learn
    (about a second of the app's start).
    """
    if name not in _PROVIDED and name in CLASSES:
        return CLASSES[name]
    return load_dataset(name, data_dir).classes


import core.data_external  # noqa: E402,F401  (registers mnist, fashion_mnist, cifar10 and npz:/folder: names)
