"""Writers of tiny datasets in the real on-disk formats torchvision reads (for the offline tests).

- MNIST / Fashion-MNIST: IDX files (big-endian magic 0x0803 / 0x0801, dimensions, uint8 data) in
  <root>/<MNIST|FashionMNIST>/raw/, plain or gzipped.
- CIFAR-10: pickled dicts in <root>/cifar-10-batches-py/: data_batch_1..5 and test_batch with
  "data" uint8 (n, 3072) rows in R, G, B plane order and "labels" lists; batches.meta with "label_names".

torchvision verifies CIFAR-10 files against the MD5 sums of the official release, which tiny files
cannot match. `accept_cifar10_files` makes the test's CIFAR10 class expect the MD5 sums of the files
just written (monkeypatch, undone after the test): torchvision's own check still runs on every file,
and production code keeps the official sums.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np

from core.engine.data_torchvision import CIFAR10_FILES

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of a uint8 array: magic (0, 0, 0x08, ndim), big-endian dimensions, data."""
    assert array.dtype == np.uint8
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 12, n_test: int = 6, gz: bool = True,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Tiny MNIST-format files under root/<folder>/raw; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": (np.arange(n_test) * 3 % 10).astype(np.uint8)}
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        data = idx_bytes(arr)
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (raw / name).write_bytes(data)
    return arrays


def write_cifar10(root: Path, per_batch: int = 4, n_test: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """Tiny CIFAR-10 python batches under root/cifar-10-batches-py; returns x (N, 32, 32, 3) and y per split."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for name in CIFAR10_FILES[:6]:
        n = n_test if name == "test_batch" else per_batch
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels, "filenames": [f"{i}.png" for i in range(n)]}, f)
        xs.append(data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.array(labels))
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR10_NAMES, "num_cases_per_batch": per_batch, "num_vis": 3072}, f)
    return {"x_train": np.concatenate(xs[:5]), "y_train": np.concatenate(ys[:5]), "x_test": xs[5], "y_test": ys[5]}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def accept_cifar10_files(monkeypatch, root: Path) -> None:
    """Make torchvision's CIFAR10 expect the MD5 sums of the files under root (see the module docstring)."""
    from torchvision.datasets import CIFAR10

    folder = root / "cifar-10-batches-py"
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5(folder / f"data_batch_{i}")] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5(folder / "test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5(folder / "batches.meta")})


def block_network(monkeypatch) -> None:
    """Make every new network connection fail at once, as on an offline machine."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
