"""Projected gradient descent (Madry et al., "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018): the one attack loop of the project.

The threat model is a small object with `init`, `step` and `project`; epsilon is a per-sample tensor,
so one batched pass attacks several epsilons at once (`attack_grid`). The loop never changes the
model's mode (train/eval) or its weights, and never accumulates gradients into its parameters.

Example:
    >>> x_adv = pgd(model, x, y, AttackSpec(norm="linf", eps=0.1, steps=20))  # x: (N, C, H, W) in [0, 1]
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from core.config import AttackSpec
from core.engine.models import attack_autocast

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, target) -> per-sample loss (N,)


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm per sample, shaped (N, 1, 1, 1) for broadcasting."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.ndim - 1)))


class Linf:
    """Every pixel moves by at most eps; steps follow the gradient's sign."""

    def init(self, x: torch.Tensor, eps: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        u = torch.rand(x.shape, generator=gen, device="cpu").to(x.device, x.dtype)
        return (2 * u - 1) * eps

    def step(self, delta: torch.Tensor, grad: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        return delta + alpha * grad.sign()

    def project(self, delta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(delta, eps), -eps)


class L2:
    """The perturbation's Euclidean norm is at most eps; steps follow the normalised gradient."""

    def init(self, x: torch.Tensor, eps: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        g = torch.randn(x.shape, generator=gen, device="cpu").to(x.device, x.dtype)
        r = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), generator=gen, device="cpu").to(x.device, x.dtype)
        d = x[0].numel()
        return g / _flat_norm(g).clamp_min(1e-12) * eps * r ** (1.0 / d)  # uniform in the ball

    def step(self, delta: torch.Tensor, grad: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        return delta + alpha * grad / _flat_norm(grad).clamp_min(1e-12)

    def project(self, delta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return delta * torch.clamp(eps / _flat_norm(delta).clamp_min(1e-12), max=1.0)


THREATS = {"linf": Linf(), "l2": L2()}


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin: best wrong logit minus true logit (positive = misclassified). (N,)"""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return other - true


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


LOSSES: dict[str, LossFn] = {"ce": ce_loss, "margin": margin_loss}


def _per_sample(value: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    return t.reshape(-1, *([1] * (x.ndim - 1)))


def _random_start(threat, x: torch.Tensor, eps: torch.Tensor, generator) -> torch.Tensor:
    if not isinstance(generator, (list, tuple)):
        return threat.init(x, eps, generator)
    parts = zip(x.chunk(len(generator)), eps.chunk(len(generator)), generator)
    return torch.cat([threat.init(xc, ec, g) for xc, ec, g in parts])


def pgd(model: nn.Module, x: torch.Tensor, target: torch.Tensor, spec: AttackSpec,
        eps: float | torch.Tensor | None = None, loss_fn: LossFn | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None) -> torch.Tensor:
    """Adversarial examples that maximise the loss within the eps-ball and the [0, 1] box.

    x: (N, C, H, W) in [0, 1]; target: (N,) labels (or whatever `loss_fn` takes, e.g. clean
    probabilities for TRADES); eps: overrides spec.eps, a float or a per-sample tensor (N,);
    generator: draws the random starts; a list of G generators splits x into G equal chunks.
    Returns x_adv (N, C, H, W), detached. With several restarts each sample keeps the restart with
    the highest final loss. The model's mode, weights and parameter gradients are left untouched.
    """
    threat = THREATS[spec.norm]
    loss_fn = loss_fn or LOSSES[spec.loss]
    eps_t = _per_sample(spec.eps if eps is None else eps, x)
    # The step size scales with each sample's eps, unless the spec fixes it.
    alpha = _per_sample(spec.step_size, x) if spec.step_size is not None else 2.5 * eps_t / max(spec.steps, 1)
    x = x.detach()
    best_x, best_loss = x.clone(), torch.full((x.shape[0],), float("-inf"), device=x.device)
    for _ in range(spec.restarts):
        delta = _random_start(threat, x, eps_t, generator) if spec.random_start else torch.zeros_like(x)
        delta = (x + threat.project(delta, eps_t)).clamp(0, 1) - x
        for _ in range(spec.steps):
            delta.requires_grad_(True)
            with attack_autocast(x.device):  # bfloat16 where native: only the step's direction depends on it
                loss = loss_fn(model(x + delta), target)
            (grad,) = torch.autograd.grad(loss.sum(), delta)
            delta = threat.project(threat.step(delta.detach(), grad, alpha), eps_t)
            delta = (x + delta).clamp(0, 1) - x  # stay in the image box
        x_adv = (x + delta).detach()
        if spec.restarts == 1:
            return x_adv
        with torch.no_grad():
            final = loss_fn(model(x_adv), target)
        better = final > best_loss
        best_x[better], best_loss[better] = x_adv[better], final[better]
    return best_x


def attack_batch(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, spec: AttackSpec, eps: Sequence[float],
                 start: int, seed_offset: int = 0) -> torch.Tensor:
    """PGD examples of one batch of `attack_grid` (the batch that begins at image `start`) at each eps.

    Returns (len(eps) * B, C, H, W), eps-major. The random start of each eps comes from its own
    generator seeded by (spec.seed, seed_offset, start, eps), so attacking one eps alone reproduces
    exactly the examples `attack_grid` made for it.
    """
    gens = [torch.Generator().manual_seed(hash((spec.seed, seed_offset, start, round(e * 1e6))) % 2**62)
            for e in eps]
    x_rep = xb.repeat(len(eps), 1, 1, 1)
    y_rep = yb.repeat(len(eps))
    eps_rep = torch.tensor(list(eps), dtype=xb.dtype, device=xb.device).repeat_interleave(len(xb))
    return pgd(model, x_rep, y_rep, spec, eps=eps_rep, generator=gens)


def attack_grid(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec,
                eps_grid: Sequence[float], batch_size: int = 256, seed_offset: int = 0,
                on_batch: Callable[[int, int], None] | None = None,
                first_index: int = 0) -> dict[float, torch.Tensor]:
    """Logits (N, K) of `model` on PGD examples at every eps of the grid (eps 0 is the clean input).

    Each batch of `batch_size` images is attacked at all epsilons of the grid together (one
    forward/backward of batch_size x len(grid) rows per step), which keeps small models busy.
    Batches do not depend on the grid, and random starts come from one generator per (seed, batch,
    eps), so an epsilon's result does not depend on which other epsilons are computed.
    `first_index` is the position of x[0] in the whole split: attacking a slice x[i:j] with
    first_index=i (i a multiple of batch_size) gives exactly rows i..j-1 of attacking the whole
    split, which lets `core.study.precompute` cut a big test set into resumable chunks.
    """
    grid = [float(e) for e in eps_grid]
    nonzero = [e for e in grid if e > 0]
    out: dict[float, list[torch.Tensor]] = {e: [] for e in grid}
    total = (len(x) + batch_size - 1) // batch_size
    for b, start in enumerate(range(0, len(x), batch_size)):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        if 0.0 in out:
            with torch.no_grad():
                out[0.0].append(model(xb).float().cpu())
        if nonzero:
            n = len(xb)
            x_adv = attack_batch(model, xb, yb, spec, nonzero, first_index + start, seed_offset)
            with torch.no_grad():
                logits = model(x_adv).float().cpu()
            for i, e in enumerate(nonzero):
                out[e].append(logits[i * n:(i + 1) * n])
        if on_batch is not None:
            on_batch(b + 1, total)
    return {e: torch.cat(v) if v else torch.empty(0) for e, v in out.items()}
