"""Manipulations of a teacher's logits before distillation: the experiment of finding 3.

Each manipulation is a pure function `(logits (N, K), labels (N,), rng) -> logits (N, K)` that
keeps some information of the teacher and destroys the rest; training a student on the result and
measuring its robustness tells which information carries the teacher's robustness. "Max" below is
the teacher's predicted class (the arg-max of its logits), whose logit every manipulation keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from core.errors import LogitscopeError

Fn = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Manipulation:
    name: str
    fn: Fn
    keeps: str
    destroys: str
    uses_teacher: bool = True  # False: the student learns from the labels alone


MANIPULATIONS: dict[str, Manipulation] = {}


def register(name: str, keeps: str, destroys: str, uses_teacher: bool = True) -> Callable[[Fn], Fn]:
    def wrap(fn: Fn) -> Fn:
        MANIPULATIONS[name] = Manipulation(name, fn, keeps, destroys, uses_teacher)
        return fn

    return wrap


def _nonmax_positions(logits: torch.Tensor) -> torch.Tensor:
    """Column indices of each row's non-max logits, in column order: (N, K-1)."""
    n, k = logits.shape
    top = logits.argmax(dim=1, keepdim=True)
    cols = torch.arange(k).expand(n, k)
    return cols[cols != top].view(n, k - 1)


@register("none", keeps="everything: the teacher as is", destroys="nothing")
def none(logits: torch.Tensor, labels: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    return logits.clone()


@register("shuffle_nonmax",
          keeps="the max logit and the multiset of non-max values (so each sample's confidence and entropy)",
          destroys="which incorrect class gets which value: the order of the incorrect classes")
def shuffle_nonmax(logits: torch.Tensor, labels: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    pos = _nonmax_positions(logits)
    perm = torch.rand(pos.shape, generator=rng).argsort(dim=1)
    out = logits.clone()
    out.scatter_(1, pos, logits.gather(1, pos.gather(1, perm)))
    return out


@register("flatten_nonmax",
          keeps="the max logit and its gap to the mean of the rest",
          destroys="the order and the spread of the non-max logits (all become their mean)")
def flatten_nonmax(logits: torch.Tensor, labels: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    pos = _nonmax_positions(logits)
    mean = logits.gather(1, pos).mean(dim=1, keepdim=True)
    return logits.clone().scatter_(1, pos, mean.expand_as(pos))


@register("resample_nonmax",
          keeps="the max logit and the order of the incorrect classes",
          destroys="sample-wise values: each sample takes the non-max profile (offsets from the max) of "
                   "another sample with the same teacher prediction, laid out in its own order")
def resample_nonmax(logits: torch.Tensor, labels: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    n, _ = logits.shape
    pred = logits.argmax(dim=1)
    donor = torch.arange(n)
    for c in pred.unique():
        idx = (pred == c).nonzero().squeeze(1)
        if len(idx) > 1:  # a random derangement-ish pairing: a cyclic shift of a random order
            order = idx[torch.randperm(len(idx), generator=rng)]
            donor[order] = order.roll(1)
    pos = _nonmax_positions(logits)
    top = logits.max(dim=1, keepdim=True).values
    own = logits.gather(1, pos)
    offsets = (logits[donor].gather(1, pos[donor]) - top[donor]).sort(dim=1, descending=True).values
    rank = own.argsort(dim=1, descending=True)  # rank[i, r] = column slot of this sample's r-th largest
    new = torch.empty_like(own).scatter_(1, rank, top + offsets)
    return logits.clone().scatter_(1, pos, new)


def _confidence(logits: torch.Tensor) -> torch.Tensor:
    return logits.softmax(dim=1).amax(dim=1)


@register("global_confidence",
          keeps="the order of all logits (the ranking of the classes)",
          destroys="sample-wise confidence: every sample is rescaled to the dataset's mean confidence")
def global_confidence(logits: torch.Tensor, labels: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    centred = logits - logits.mean(dim=1, keepdim=True)
    target = _confidence(logits).mean()
    k = logits.shape[1]
    target = target.clamp(1.0 / k + 1e-6, 1 - 1e-6)
    # Confidence of s * z grows monotonically with s > 0 (from 1/K towards 1): bisect s per sample.
    lo = torch.zeros(len(logits), 1)
    hi = torch.ones(len(logits), 1)
    while bool((_confidence(hi * centred) < target).any()) and hi.max() < 1e6:
        hi = torch.where(_confidence(hi * centred)[:, None] < target, hi * 2, hi)
    for _ in range(60):
        mid = (lo + hi) / 2
        low = _confidence(mid * centred)[:, None] < target
        lo, hi = torch.where(low, mid, lo), torch.where(low, hi, mid)
    return (lo + hi) / 2 * centred


@register("hard_labels", keeps="nothing of the teacher", destroys="all of the teacher's logits: "
          "the student learns the true labels only (cross-entropy)", uses_teacher=False)
def hard_labels(logits: torch.Tensor, labels: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Logits whose softmax is the one-hot label at any temperature up to 100."""
    return torch.nn.functional.one_hot(labels, logits.shape[1]).to(logits.dtype) * 1e4


def manipulate(name: str, logits: torch.Tensor, labels: torch.Tensor, fraction: float = 1.0,
               seed: int = 0) -> torch.Tensor:
    """Apply a registered manipulation to a random `fraction` of the samples (others stay as is)."""
    if name not in MANIPULATIONS:
        raise LogitscopeError(f"Unknown manipulation {name!r}: choose one of {', '.join(MANIPULATIONS)}.")
    rng = torch.Generator().manual_seed(seed)
    logits = logits.detach().float().cpu()
    done = MANIPULATIONS[name].fn(logits, labels.cpu(), rng)
    if fraction >= 1:
        return done
    chosen = torch.rand(len(logits), generator=rng) < fraction
    return torch.where(chosen[:, None], done, logits)
