"""Straightforward reference implementations, written the way a first version usually is.

They are what our optimised code is measured against in the same run: a PGD loop that calls
`loss.backward()` (so it also computes weight gradients) and attacks one epsilon at a time, and a
training epoch that goes through a DataLoader.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def reference_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int) -> torch.Tensor:
    """Linf PGD with random start, step 2.5 * eps / steps, the textbook way."""
    alpha = 2.5 * eps / steps
    delta = torch.empty_like(x).uniform_(-eps, eps)
    delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
    for _ in range(steps):
        loss = F.cross_entropy(model(x + delta), y)
        loss.backward()
        with torch.no_grad():
            delta += alpha * delta.grad.sign()
            delta.clamp_(-eps, eps)
            delta.copy_((x + delta).clamp(0, 1) - x)
        delta.grad.zero_()
    model.zero_grad(set_to_none=True)
    return (x + delta).detach()


def reference_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 64,
                    adversarial_eps: float = 0.0, steps: int = 5) -> None:
    """One epoch of SGD training through a DataLoader; PGD-AT when adversarial_eps > 0."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for xb, yb in DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True):
        if adversarial_eps > 0:
            xb = reference_pgd(model, xb, yb, adversarial_eps, steps)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
