"""Real datasets through torchvision (MNIST, Fashion-MNIST, CIFAR-10), and your own data.

A torchvision dataset is read, in this order, from
1. `data_dir` (the CLI's --data-dir, the app's data-folder setting), in torchvision's own layout;
2. the cache, `cache_dir()/"datasets"` (same layout);
3. a download into the cache, when the network allows.
Offline and missing, the LogitscopeError says which files go where. Compressed copies (MNIST's
`.gz` files, `cifar-10-python.tar.gz`) are unpacked into the cache, never into your folder.

A plugin of `core.engine.registry`, listed in `core.engine.data`. Your own data ("npz:<path>",
"folder:<path>") is the plugin `core.engine.data_own`.
Every loader returns float32 images in [0, 1], (N, C, H, W), int64 labels and class names.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from core.config import cache_dir
from core.engine.registry import Dataset, make_dataset, register
from core.errors import LogitscopeError
from core.storage import atomic_write

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")


@dataclass(frozen=True)
class Source:
    """Where torchvision keeps one dataset under its root folder, and what it is."""

    name: str                      # Logitscope's dataset name
    title: str
    tv_class: str                  # class in torchvision.datasets
    folder: str                    # relative to the root: where torchvision reads the files
    files: tuple[str, ...]
    gz: bool                       # the files may also be given gzipped (name + ".gz")
    archive: str | None            # an archive at the root that unpacks into `folder`
    classes: tuple[str, ...] | None  # None: the names torchvision reports
    description: str


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("mnist", "MNIST", "MNIST", "MNIST/raw", IDX_FILES, True, None, tuple("0123456789"),
           "MNIST handwritten digits, 28x28 grey, 60,000 train / 10,000 test, 10 classes (torchvision)"),
    Source("fashion_mnist", "Fashion-MNIST", "FashionMNIST", "FashionMNIST/raw", IDX_FILES, True, None, None,
           "Fashion-MNIST clothing, 28x28 grey, 60,000 train / 10,000 test, 10 classes (torchvision)"),
    Source("cifar10", "CIFAR-10", "CIFAR10", "cifar-10-batches-py", CIFAR10_FILES, False, "cifar-10-python.tar.gz",
           None, "CIFAR-10 objects, 32x32 colour, 50,000 train / 10,000 test, 10 classes (torchvision)"),
)}


def datasets_root() -> Path:
    """Where downloaded and unpacked datasets live: cache_dir()/"datasets"."""
    return cache_dir() / "datasets"


def _complete(src: Source, root: Path) -> bool:
    return all((root / src.folder / f).is_file() for f in src.files)


def _locate(src: Source, root: Path) -> Path | None:
    """The root to read `src` from: `root` itself, or the cache after unpacking what `root` holds."""
    from torchvision.datasets.utils import extract_archive  # on use: torchvision adds ~1 s to the app's start

    if _complete(src, root):
        return root
    folder, target = root / src.folder, datasets_root()
    if src.gz and all((folder / f).is_file() or (folder / f"{f}.gz").is_file() for f in src.files):
        out = target / src.folder
        out.mkdir(parents=True, exist_ok=True)
        for f in src.files:
            packed = folder / f"{f}.gz"
            if (folder / f).is_file():  # a plain file next to gzipped ones: copy it over as is
                atomic_write(out / f, (folder / f).read_bytes())
            else:
                extract_archive(str(packed), str(out))
        return target
    if src.archive and (root / src.archive).is_file():
        target.mkdir(parents=True, exist_ok=True)
        extract_archive(str(root / src.archive), str(target))
        return target if _complete(src, target) else None
    return None


def _to_arrays(ds) -> tuple[np.ndarray, np.ndarray]:
    """A torchvision dataset's images as float32 (N, C, H, W) in [0, 1] and labels as int64 (N,)."""
    x = ds.data.numpy() if torch.is_tensor(ds.data) else np.asarray(ds.data)  # (N, H, W) or (N, H, W, C) uint8
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    x = x.astype(np.float32)
    x /= 255.0
    y = ds.targets.numpy() if torch.is_tensor(ds.targets) else np.asarray(ds.targets)
    return x, y.astype(np.int64)


def _read(src: Source, root: Path, download: bool) -> Dataset:
    import torchvision.datasets as tvd  # on use, as above

    cls = getattr(tvd, src.tv_class)
    train = cls(str(root), train=True, download=download)
    test = cls(str(root), train=False, download=False)
    x_train, y_train = _to_arrays(train)
    x_test, y_test = _to_arrays(test)
    classes = src.classes or tuple(str(c) for c in train.classes)
    return make_dataset(src.name, x_train, y_train, x_test, y_test, classes)


def _short(exc: BaseException) -> str:
    """An exception's message on one line, at most 300 characters."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def placement_hint(src: Source) -> str:
    """Which files go where, for error messages and the CLI."""
    files = ", ".join(src.files)
    hint = f"put {files}{' (plain or .gz)' if src.gz else ''} in <DATA_DIR>/{src.folder}/"
    if src.archive:
        hint += f" (or {src.archive} itself in <DATA_DIR>/)"
    return (f"{hint} and point --data-dir (or the app's data-folder setting) to <DATA_DIR>, "
            f"or put them in {datasets_root() / src.folder}/")


def load_torchvision(src: Source, data_dir: str | None = None) -> Dataset:
    """Read `src` from data_dir or the cache, downloading it into the cache if neither has it."""
    roots = ([Path(data_dir).expanduser()] if data_dir else []) + [datasets_root()]
    for root in roots:
        try:
            found = _locate(src, root)
            if found is not None:
                return _read(src, found, download=False)
        except LogitscopeError:
            raise
        except Exception as exc:  # torchvision's checksum, IDX parsing, a broken archive, a full disk
            raise LogitscopeError(
                f"{src.title} files under {root} cannot be read ({_short(exc)}): they are incomplete, corrupted "
                f"or not the official files. Replace them: {placement_hint(src)}.") from exc
    try:
        datasets_root().mkdir(parents=True, exist_ok=True)
        return _read(src, datasets_root(), download=True)
    except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError; torchvision wraps some
        where = f"the data folder {data_dir} or the cache" if data_dir else "the cache (no --data-dir given)"
        raise LogitscopeError(f"{src.title} is not in {where}, and downloading it failed ({_short(exc)}). "
                              f"To use it offline, {placement_hint(src)}.") from exc


for _src in SOURCES.values():
    register(_src.name, _src.description, _src.classes)(partial(load_torchvision, _src))
