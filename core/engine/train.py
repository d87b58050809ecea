"""One training loop. Standard, PGD-AT, TRADES and distillation are configurations of it.

- standard: cross-entropy on clean inputs.
- pgd: cross-entropy on PGD examples (Madry et al. 2018), generated with the model in eval mode.
- fgsm: "fast" AT (Wong, Rice & Kolter 2020, "Fast is better than free"): cross-entropy on one signed
  gradient step of 1.25 * eps from a uniform random start in the eps-ball (FGSM-RS), model in eval mode.
- trades: CE(clean) + beta * KL(f(x) || f(x_adv)), x_adv maximising that KL (Zhang et al. 2019).
- distill: T^2 * KL(softmax(t / T) || softmax(s / T)) on clean inputs, with teacher logits t
  (possibly manipulated, see core.engine.distill), plus `hard_weight` * CE on the labels (Hinton et al. 2015).

Data are tensors in memory, shuffled by a seeded generator: no DataLoader, deterministic for a seed.
The forward passes run under bfloat16 autocast where the hardware computes it natively (CUDA, CPUs with
AVX512-BF16 or AMX; `core.engine.models.train_autocast`), with float32 weights; elsewhere in float32.
Several models of one configuration (seeds, students of one teacher) can train together in one pass
(`train_group`, `core.engine.group`): the same loop, with a batch of models.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from core.config import AttackSpec, TrainSpec
from core.engine.attacks import pgd
from core.engine.data import Dataset
from core.engine.distill import MANIPULATIONS, manipulate
from core.engine.group import ModelGroup
from core.engine.models import train_autocast
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


def shared_config(spec: TrainSpec) -> TrainSpec:
    """What models trained together must share: everything but the seed and which logits a student learns."""
    d, a = spec.distill, spec.attack  # the attack's seed is unused: random starts come from the model's generator
    return replace(spec, seed=0, attack=None if a is None else replace(a, seed=0),
                   distill=None if d is None else replace(d, teacher="-", manipulation="none", fraction=1.0))


@dataclass
class _Batch:
    """One step's rows of a group of M models, model-major: (M * B, ...) each."""

    x: torch.Tensor
    y: torch.Tensor
    soft: torch.Tensor | None  # distillation targets (M * B, K); any value on rows of label-only students
    kd_weight: torch.Tensor | None  # (M * B,) weight of the distillation term: 0 for label-only students


def _row_losses(net: nn.Module, spec: TrainSpec, b: _Batch, gens: list[torch.Generator]) -> torch.Tensor:
    """The training loss of every row (M * B,) for the spec's method (net in train mode).

    Generators: one per model, each drawing the random starts of its own rows (`pgd` splits the rows).
    """
    gen = gens if len(gens) > 1 else gens[0]
    if spec.method == "standard":
        return F.cross_entropy(net(b.x), b.y, reduction="none")
    if spec.method in ("pgd", "fgsm"):
        net.eval()
        attack = spec.attack if spec.method == "pgd" else fast_attack(spec.attack)
        x_adv = pgd(net, b.x, b.y, attack, generator=gen)
        net.train()
        return F.cross_entropy(net(x_adv), b.y, reduction="none")
    if spec.method == "trades":
        net.eval()
        with torch.no_grad():
            p_clean = F.softmax(net(b.x), dim=1)
        # KL has zero gradient at delta = 0, so TRADES always starts from a random point.
        x_adv = pgd(net, b.x, p_clean, replace(spec.attack, random_start=True), loss_fn=_kl_rows, generator=gen)
        net.train()
        logits = net(b.x)
        robust = _kl_rows(net(x_adv), F.softmax(logits, dim=1))
        return F.cross_entropy(logits, b.y, reduction="none") + spec.trades_beta * robust
    if spec.method == "distill":
        d = spec.distill
        logits = net(b.x)
        ce = F.cross_entropy(logits, b.y, reduction="none")
        if b.soft is None:  # label-only students only
            return ce
        kd = _kl_rows(logits / d.temperature, b.soft) * d.temperature ** 2
        w = b.kd_weight * (1 - d.hard_weight)
        return w * kd + (1 - w) * ce
    raise LogitscopeError(f"Unknown training method {spec.method!r}.")


def train(model: nn.Module, data: Dataset, spec: TrainSpec, teacher_logits: torch.Tensor | None = None,
          device: str | torch.device = "cpu", progress: ProgressFn | None = None,
          cancel: CancelFn | None = None) -> nn.Module:
    """Train `model` in place on data's training split and return it in eval mode.

    teacher_logits: (N_train, K) clean logits of the teacher, for method "distill".
    progress is called after every batch; cancel is polled after every batch and raises Cancelled.
    Adam with a one-cycle schedule: robust to the choice of learning rate across methods.
    """
    return train_group([model], data, [spec], [teacher_logits], device, progress, cancel)[0]


def train_group(models: Sequence[nn.Module], data: Dataset, specs: Sequence[TrainSpec],
                teacher_logits: Sequence[torch.Tensor | None] | None = None, device: str | torch.device = "cpu",
                progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> list[nn.Module]:
    """Train M models of one architecture together, in place, each as `train` would train it alone.

    specs[m] and teacher_logits[m] are model m's; the specs may differ only in their seed and in what a
    student learns (teacher, manipulation, fraction). Every model keeps its own shuffling and random
    starts (a generator seeded by its spec), its rows of each step are its own batch, and one Adam over
    the stacked weights is M independent Adams (it is elementwise), so the group computes each model's
    training alone, up to the rounding of the batched kernels (tests/test_engine_group.py states how close).
    M = 1 runs the model itself, without the group's stacking. The losses' mean over a model's batch is
    summed over models. Returns the models in eval mode.
    """
    specs, models = list(specs), list(models)
    teacher_logits = list(teacher_logits) if teacher_logits is not None else [None] * len(models)
    if not models or len(specs) != len(models) or len(teacher_logits) != len(models):
        raise ValueError("train_group needs one spec and one teacher_logits entry per model")
    spec = specs[0]
    if any(shared_config(s) != shared_config(spec) for s in specs):
        raise LogitscopeError("Models trained together must share their training configuration "
                              "(method, epochs, batch size, learning rate, attack): only seeds and students' "
                              "teachers and manipulations may differ.")
    torch.manual_seed(spec.seed)
    gens = [torch.Generator().manual_seed(s.seed) for s in specs]
    if spec.train_limit is not None and spec.train_limit < len(data.y_train):
        n = spec.train_limit  # the first n samples; teacher logits cover the same ones
        data = replace(data, x_train=data.x_train[:n], y_train=data.y_train[:n])
        teacher_logits = [t[:n] if t is not None and len(t) > n else t for t in teacher_logits]
    for model in models:
        model.to(device).train()
    group = models[0] if len(models) == 1 else ModelGroup(models).train()
    x_all, y_all = data.x_train.to(device), data.y_train.to(device)
    soft, kd_weight = _stacked_targets(specs, data, teacher_logits, device) if spec.method == "distill" \
        else (None, None)
    n, m = len(y_all), len(models)
    batches = math.ceil(n / spec.batch_size)
    params = list(group.parameters())
    opt = torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay, **_adam_kernel(params))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=spec.epochs * batches,
                                                pct_start=0.25)
    start = time.perf_counter()
    for epoch in range(1, spec.epochs + 1):
        orders = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)  # (M, N)
        total = 0.0
        for b in range(batches):
            idx = orders[:, b * spec.batch_size:(b + 1) * spec.batch_size]  # (M, B)
            rows = idx.reshape(-1)
            batch = _Batch(x_all[rows], y_all[rows],
                           None if soft is None else soft[torch.arange(m, device=device)[:, None], idx].flatten(0, 1),
                           None if kd_weight is None else kd_weight.repeat_interleave(idx.shape[1]))
            with train_autocast(device):
                per_model = _row_losses(group, spec, batch, gens).float().view(m, -1).mean(dim=1)  # (M,)
            loss = per_model.sum()
            if not torch.isfinite(loss):
                bad = [i for i in range(m) if not torch.isfinite(per_model[i])]
                raise LogitscopeError(f"Training diverged (loss {per_model[bad[0]].item()}"
                                      f"{f' in model {bad[0] + 1} of {m}' if m > 1 else ''}) in epoch {epoch}: "
                                      "lower the learning rate.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() / m
            if progress is not None:
                progress(TrainProgress(epoch, spec.epochs, b + 1, batches, total / (b + 1),
                                       time.perf_counter() - start))
            if cancel is not None and cancel():
                raise Cancelled(f"Training cancelled in epoch {epoch}.")
    if isinstance(group, ModelGroup):
        group.write_back()
    return [model.eval() for model in models]


def _stacked_targets(specs: Sequence[TrainSpec], data: Dataset, teacher_logits: Sequence[torch.Tensor | None],
                     device: str | torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Each student's soft targets stacked (M, N, K), and its weight of the distillation term (M,): 1 for a
    student of the teacher, 0 for a label-only one (whose targets are then zeros). (None, None) when no
    student of the group uses a teacher."""
    soft = [_soft_targets(s, data, t) for s, t in zip(specs, teacher_logits)]
    if all(t is None for t in soft):
        return None, None
    like = next(t for t in soft if t is not None)
    weight = torch.tensor([0.0 if t is None else 1.0 for t in soft], device=device)
    return torch.stack([torch.zeros_like(like) if t is None else t for t in soft]).to(device), weight


def _adam_kernel(params: list[torch.Tensor]) -> dict:
    """Adam's fused kernel where this torch has it for the parameters' device (one pass over all of them
    instead of a dozen small operations per tensor), else its multi-tensor (foreach) one."""
    device = params[0].device.type if params else "cpu"
    if device in ("cpu", "cuda") and all(p.dtype == torch.float32 for p in params):
        return {"fused": True}
    return {"foreach": True}
