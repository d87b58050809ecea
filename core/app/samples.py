"""Single samples: images, and the adversarial example behind a cached logit vector.

The logits cache stores logits, not adversarial images. `adversarial_example` recomputes the image
exactly as `core.engine.attacks.attack_grid` made it (same batch, same random start, same steps), so the
image shown next to a cached logit vector is the one that produced it; `exact` says whether the
recomputed logits match the cached ones (they do unless the cache came from another code version).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from core.app.views import LogitSet
from core.config import AttackSpec, DataSpec
from core.engine.attacks import attack_batch
from core.engine.data import load_dataset
from core.engine.logits import eval_batch_size
from core.errors import LogitscopeError


def images(data: DataSpec, indices, data_dir: str | None = None) -> np.ndarray:
    """Images of a split by index: (n, C, H, W) float32 in [0, 1]."""
    x, _ = load_dataset(data.name, data_dir).split(data)
    idx = np.asarray(list(indices), dtype=np.int64)
    if len(idx) and (idx.min() < 0 or idx.max() >= len(x)):
        raise LogitscopeError(f"Sample indices must lie in [0, {len(x) - 1}].")
    return x[torch.as_tensor(idx)].numpy()


@dataclass(frozen=True)
class Adversarial:
    """One sample under attack: clean image, adversarial image, perturbation, and the model's logits."""

    index: int
    eps: float
    clean: np.ndarray        # (C, H, W) in [0, 1]
    adversarial: np.ndarray  # (C, H, W) in [0, 1]
    logits: np.ndarray       # (K,) the model's logits on the adversarial image
    exact: bool              # the logits equal the cached ones (the same example as in the cache)

    @property
    def perturbation(self) -> np.ndarray:
        return self.adversarial - self.clean


def adversarial_example(model: nn.Module, data: DataSpec, attack: AttackSpec, eps: float, index: int,
                        cached_logits: np.ndarray | None = None, device: str | torch.device = "cpu",
                        data_dir: str | None = None) -> Adversarial:
    """Recompute sample `index`'s PGD example at `eps` the way the logits cache computed it.

    attack_grid attacks fixed batches of images; `attack_batch` on the same batch at this eps
    reproduces the example (samples do not interact inside a batch: the model is in eval mode and
    the loss is a per-sample sum).
    """
    x, y = load_dataset(data.name, data_dir).split(data)
    if not 0 <= index < len(x):
        raise LogitscopeError(f"Sample {index} does not exist: pick an index between 0 and {len(x) - 1}.")
    clean = x[index].numpy()
    model = model.to(device).eval()
    if eps <= 0:
        with torch.no_grad():
            z = model(x[index:index + 1].to(device)).float().cpu().numpy()[0]
        return Adversarial(index, 0.0, clean, clean.copy(), z, _same(z, cached_logits))
    bs = eval_batch_size(x.shape[1:], device)
    start = (index // bs) * bs
    xb, yb = x[start:start + bs].to(device), y[start:start + bs].to(device)
    x_adv = attack_batch(model, xb, yb, attack, [float(eps)], start)[index - start:index - start + 1]
    with torch.no_grad():
        z = model(x_adv).float().cpu().numpy()[0]
    return Adversarial(index, float(eps), clean, x_adv[0].cpu().numpy(), z, _same(z, cached_logits))


def _same(z: np.ndarray, cached: np.ndarray | None) -> bool:
    return cached is not None and bool(np.allclose(z, cached, rtol=1e-4, atol=1e-4))


def sample_logits(bundle: LogitSet, names: Sequence[str], eps: float, idx: int) -> pd.DataFrame:
    """One sample's logits for several models at one epsilon. Columns: model, class, logit, role."""
    if not 0 <= idx < len(bundle.labels):
        raise LogitscopeError(f"Sample {idx} does not exist: pick an index between 0 and {len(bundle.labels) - 1}.")
    rows = []
    y = int(bundle.labels[idx])
    for name in names:
        z = bundle.at(name, eps)[idx]
        pred = int(z.argmax())
        for k, v in enumerate(z):
            role = "true class" if k == y else ("prediction" if k == pred else "other")
            rows.append({"model": name, "class": bundle.classes[k], "logit": float(v), "role": role})
    return pd.DataFrame(rows)


def clean_and_attacked_logits(bundle: LogitSet, names: Sequence[str], eps: float,
                              idx: int) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """One sample's logits on the clean image and under the attack at `eps` (None when eps is 0).

    Each frame has `sample_logits`' columns; the clean one is the grid's epsilon 0, which every
    logit set holds.
    """
    clean = sample_logits(bundle, names, 0.0, idx)
    return clean, (sample_logits(bundle, names, eps, idx) if eps > 0 else None)
