"""The embedded default dataset: scikit-learn's bundled 8x8 digits (a plugin of the registry).

It needs no download, so the whole app works offline on a laptop.
"""

from __future__ import annotations

import numpy as np

from core.engine.registry import CLASSES, Dataset, make_dataset, register


def digits_split(target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fixed, documented digits split: 80/20, stratified, random_state=0."""
    # scikit-learn is imported on first load, not at import: the app's first page shows cached logits
    # and only needs the class names, and scikit-learn costs it about a second of start-up.
    from sklearn.model_selection import train_test_split

    return train_test_split(np.arange(len(target)), test_size=0.2, random_state=0, stratify=target)


@register("digits", "scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes); no download",
          classes=tuple("0123456789"))
def load_digits(data_dir: str | None = None) -> Dataset:
    from sklearn.datasets import load_digits as sk_digits  # on first load only (start-up time, as above)

    bunch = sk_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8); pixel values are 0..16
    y = bunch.target.astype(np.int64)
    train_idx, test_idx = digits_split(y)
    return make_dataset("digits", x[train_idx], y[train_idx], x[test_idx], y[test_idx], CLASSES["digits"])
