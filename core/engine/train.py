"""One training loop. Standard, PGD-AT, TRADES and distillation are configurations of it.

- standard: cross-entropy on clean inputs.
- pgd: cross-entropy on PGD examples (Madry et al. 2018), generated with the model in eval mode.
- fgsm: "fast" AT (Wong, Rice & Kolter 2020, "Fast is better than free"): cross-entropy on one signed
  gradient step of 1.25 * eps from a uniform random start in the eps-ball (FGSM-RS), model in eval mode.
- trades: CE(clean) + beta * KL(f(x) || f(x_adv)), x_adv maximising that KL (Zhang et al. 2019).
- distill: T^2 * KL(softmax(t / T) || softmax(s / T)) on clean inputs, with teacher logits t
  (possibly manipulated, see core.engine.distill), plus `hard_weight` * CE on the labels (Hinton et al. 2015).

Data are tensors in memory, shuffled by a seeded generator: no DataLoader, deterministic for a seed.
On CUDA the forward passes run under bfloat16 autocast (`core.engine.models.autocast`); elsewhere in float32.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from core.config import AttackSpec, TrainSpec
from core.engine.attacks import pgd
from core.engine.data import Dataset
from core.engine.distill import MANIPULATIONS, manipulate
from core.engine.models import autocast
from core.errors import Cancelled, LogitscopeError


@dataclass(frozen=True)
class TrainProgress:
    """What a progress callback receives after every batch."""

    epoch: int  # 1-based
    epochs: int
    batch: int  # 1-based, within the epoch
    batches: int
    loss: float  # running mean over the epoch
    elapsed: float  # seconds since the start

    @property
    def fraction(self) -> float:
        return ((self.epoch - 1) * self.batches + self.batch) / (self.epochs * self.batches)

    @property
    def eta(self) -> float:
        """Estimated seconds left."""
        return self.elapsed * (1 - self.fraction) / max(self.fraction, 1e-9)


ProgressFn = Callable[[TrainProgress], None]
CancelFn = Callable[[], bool]


def _kl_rows(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """KL(target || softmax(logits)) per sample, (N,)."""
    return F.kl_div(F.log_softmax(logits, dim=1), target_probs, reduction="none").sum(dim=1)


def _soft_targets(spec: TrainSpec, data: Dataset, teacher_logits: torch.Tensor | None) -> torch.Tensor | None:
    d = spec.distill
    if d.manipulation not in MANIPULATIONS:
        raise LogitscopeError(f"Unknown manipulation {d.manipulation!r}: choose one of {', '.join(MANIPULATIONS)}.")
    if not MANIPULATIONS[d.manipulation].uses_teacher:
        return None
    if teacher_logits is None or teacher_logits.shape[0] != len(data.y_train):
        raise LogitscopeError("Distillation needs the teacher's logits on every training sample.")
    t = manipulate(d.manipulation, teacher_logits, data.y_train, d.fraction, seed=spec.seed)
    return F.softmax(t / d.temperature, dim=1)


def fast_attack(spec: AttackSpec) -> AttackSpec:
    """The FGSM-RS attack of fast AT: one step of 1.25 * eps from a uniform random start (Wong et al. 2020)."""
    return replace(spec, steps=1, step_size=1.25 * spec.eps if spec.eps > 0 else None, restarts=1,
                   random_start=True)


def batch_loss(model: nn.Module, spec: TrainSpec, x: torch.Tensor, y: torch.Tensor,
               soft: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
    """The mean training loss of one batch for the spec's method (model in train mode)."""
    if spec.method == "standard":
        return F.cross_entropy(model(x), y)
    if spec.method in ("pgd", "fgsm"):
        model.eval()
        attack = spec.attack if spec.method == "pgd" else fast_attack(spec.attack)
        x_adv = pgd(model, x, y, attack, generator=gen)
        model.train()
        return F.cross_entropy(model(x_adv), y)
    if spec.method == "trades":
        model.eval()
        with torch.no_grad():
            p_clean = F.softmax(model(x), dim=1)
        # KL has zero gradient at delta = 0, so TRADES always starts from a random point.
        x_adv = pgd(model, x, p_clean, replace(spec.attack, random_start=True), loss_fn=_kl_rows, generator=gen)
        model.train()
        logits = model(x)
        robust = _kl_rows(model(x_adv), F.softmax(logits, dim=1)).mean()
        return F.cross_entropy(logits, y) + spec.trades_beta * robust
    if spec.method == "distill":
        d = spec.distill
        logits = model(x)
        ce = F.cross_entropy(logits, y)
        if soft is None:  # a label-only student
            return ce
        kd = _kl_rows(logits / d.temperature, soft).mean() * d.temperature ** 2
        return (1 - d.hard_weight) * kd + d.hard_weight * ce
    raise LogitscopeError(f"Unknown training method {spec.method!r}.")


def train(model: nn.Module, data: Dataset, spec: TrainSpec, teacher_logits: torch.Tensor | None = None,
          device: str | torch.device = "cpu", progress: ProgressFn | None = None,
          cancel: CancelFn | None = None) -> nn.Module:
    """Train `model` in place on data's training split and return it in eval mode.

    teacher_logits: (N_train, K) clean logits of the teacher, for method "distill".
    progress is called after every batch; cancel is polled after every batch and raises Cancelled.
    Adam with a one-cycle schedule: robust to the choice of learning rate across methods.
    """
    torch.manual_seed(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed)
    if spec.train_limit is not None and spec.train_limit < len(data.y_train):
        n = spec.train_limit  # the first n samples; teacher logits cover the same ones
        data = replace(data, x_train=data.x_train[:n], y_train=data.y_train[:n])
        teacher_logits = teacher_logits[:n] if teacher_logits is not None and len(teacher_logits) > n else teacher_logits
    model.to(device).train()
    x_all, y_all = data.x_train.to(device), data.y_train.to(device)
    soft = _soft_targets(spec, data, teacher_logits) if spec.method == "distill" else None
    soft = soft.to(device) if soft is not None else None
    n = len(y_all)
    batches = math.ceil(n / spec.batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=spec.epochs * batches,
                                                pct_start=0.25)
    start = time.perf_counter()
    for epoch in range(1, spec.epochs + 1):
        order = torch.randperm(n, generator=gen).to(device)
        total = 0.0
        for b in range(batches):
            idx = order[b * spec.batch_size:(b + 1) * spec.batch_size]
            with autocast(device):
                loss = batch_loss(model, spec, x_all[idx], y_all[idx], None if soft is None else soft[idx], gen)
            if not torch.isfinite(loss):
                raise LogitscopeError(f"Training diverged (loss {loss.item()}) in epoch {epoch}: lower the learning rate.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
            if progress is not None:
                progress(TrainProgress(epoch, spec.epochs, b + 1, batches, total / (b + 1),
                                       time.perf_counter() - start))
            if cancel is not None and cancel():
                raise Cancelled(f"Training cancelled in epoch {epoch}.")
    return model.eval()
