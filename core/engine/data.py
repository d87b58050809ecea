"""Datasets: the one place that lists the dataset plugins, and the loader everything else calls.

Importing this module registers every plugin:
- `data_digits`: scikit-learn's bundled 8x8 digits, the embedded default (no download);
- `data_torchvision`: MNIST, Fashion-MNIST and CIFAR-10 through torchvision;
- `data_own`: your own data as "npz:<path>" or "folder:<path>".
A new plugin imports `core.engine.registry`, registers its loaders, and is added to the list below.
The registry's names are re-exported here, so callers import datasets from this module only.
"""

from __future__ import annotations

from functools import lru_cache

from core.engine import data_digits, data_own, data_torchvision
from core.engine.registry import (
    CLASSES,
    DATASETS,
    DESCRIPTIONS,
    SCHEME_DESCRIPTIONS,
    SCHEMES,
    Dataset,
    dataset_folder,
    dataset_scheme,
    is_dataset_name,
    make_dataset,
    register,
    register_scheme,
)
from core.errors import LogitscopeError

PLUGINS = (data_digits, data_torchvision, data_own)  # registered by being imported, in this order

__all__ = ["CLASSES", "DATASETS", "DESCRIPTIONS", "PLUGINS", "SCHEME_DESCRIPTIONS", "SCHEMES", "Dataset",
           "dataset_classes", "dataset_folder", "dataset_scheme", "is_dataset_name", "load_dataset",
           "make_dataset", "provide", "register", "register_scheme"]


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

