"""Is a model's robustness real, or are its gradients only hiding the adversarial examples?

Gradient masking (Athalye, Carlini & Wagner, "Obfuscated Gradients Give a False Sense of Security",
ICML 2018) makes gradient attacks fail without the model being robust: rounding or saturating layers
give zero or useless gradients, so PGD finds nothing and its accuracy looks high. The check compares
numbers that are cheap once the logits are cached, following Carlini et al.'s checklist ("On
Evaluating Adversarial Robustness", 2019) and AutoAttack's own flags:

- AutoAttack's accuracy far below PGD's: PGD was misled;
- PGD on cross-entropy far above PGD on the margin loss: a saturated softmax hides the gradient;
- AutoAttack's warnings (zero gradients, a randomised or dynamic model, probabilities as outputs);
- accuracy that rises with eps: a larger ball holds every smaller one, so an attack that finds less in
  it is failing;
- accuracy above chance under an unbounded attack (Linf eps 1 lets PGD paint any image).

Example:
    >>> report = masking_check(pgd_acc, aa_acc, margin_acc, record.warnings, unbounded_accuracy(model, x, y), 10)
    >>> report.flagged, report.reasons
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn

from core.config import AttackSpec
from core.engine.attacks import pgd

GAP = 0.1         # accuracy difference that flags: far beyond the spread of PGD's random starts (a few %),
                  # and beyond the usual PGD-20 vs AutoAttack gap of honest AT models (digits PGD-AT: 8-9% at
                  # eps 0.2-0.3 over the 360 test images; Madry et al.'s CIFAR-10 model: about 7%)
Z = 1.645         # one-sided 95%: a gap counts once it exceeds GAP by more than the test images' sampling noise
CHANCE_MARGIN = 0.1  # unbounded accuracy above chance + this flags
RISE_IMAGES = 2   # accuracy may rise with eps by at most this many test images (random starts differ per eps)
UNBOUNDED_IMAGES = 128  # test images the unbounded attack uses: enough to tell ~0 from chance
UNBOUNDED_STEPS = 50    # PGD steps of the unbounded attack


@dataclass(frozen=True)
class MaskingReport:
    """The verdict, the reasons for a reader, and the numbers it was made from (accuracies in [0, 1])."""

    flagged: bool
    reasons: list[str]
    pgd_acc: dict[float, float]
    reliable_acc: dict[float, float]
    margin_acc: dict[float, float] | None
    warnings: list[str]
    unbounded_acc: float | None
    chance: float
    rise_tolerance: float
    n_images: int | None


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _gaps(high: Mapping[float, float], low: Mapping[float, float], what: str, why: str,
          n_images: int | None) -> list[str]:
    """Reasons for every eps > 0 where `high` exceeds `low` by more than GAP plus the sampling noise.

    The noise of a gap g over n images: nearly every image behind it is one the weaker attack left standing
    and the stronger one took, so g * n is about binomial and its one-sided 95% margin is Z * sqrt(g / n).
    """
    out = []
    for e in sorted(set(high) & set(low)):
        gap = high[e] - low[e]
        noise = Z * math.sqrt(max(gap, 0.0) / n_images) if n_images else 0.0
        if e > 0 and gap > GAP + noise:
            margin = f" plus {_pct(noise)} of sampling noise over {n_images} images" if n_images else ""
            out.append(f"At eps {e:g}, {what}: {_pct(high[e])} against {_pct(low[e])}, "
                       f"a gap of {_pct(gap)} (more than {_pct(GAP)}{margin}). {why}")
    return out


def _rises(acc: Mapping[float, float], name: str, tolerance: float) -> list[str]:
    out = []
    grid = sorted(acc)
    for a, b in zip(grid, grid[1:]):
        if acc[b] - acc[a] > tolerance + 1e-9:
            out.append(f"{name} accuracy rises from {_pct(acc[a])} at eps {a:g} to {_pct(acc[b])} at eps {b:g}: "
                       "a larger ball holds every smaller one, so the attack is failing, not the model resisting.")
    return out


def masking_check(pgd_acc: Mapping[float, float], reliable_acc: Mapping[float, float],
                  margin_acc: Mapping[float, float] | None, warnings: Sequence[str], unbounded_acc: float | None,
                  n_classes: int, n_images: int | None = None) -> MaskingReport:
    """Flag a model whose gradient attacks look stronger than they are. Pure: numbers in, verdict out.

    pgd_acc, reliable_acc, margin_acc: accuracy by eps (0 = clean) under PGD (CE loss), AutoAttack and PGD
    on the margin loss (None: not measured); warnings: AutoAttack's warnings on this model (e.g. the
    union of its entries' `LogitsRecord.warnings`); unbounded_acc: `unbounded_accuracy` (None: not
    measured); n_images: test images behind the accuracies: a gap must then exceed GAP by more than its
    sampling noise, and accuracy may rise with eps by RISE_IMAGES images (2% when not given).
    """
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    chance = 1.0 / n_classes
    tolerance = RISE_IMAGES / n_images if n_images else 0.02
    reasons = _gaps(pgd_acc, reliable_acc, "PGD leaves far more correct than AutoAttack",
                    "PGD's gradients lead it astray here: only AutoAttack's number is robust accuracy.", n_images)
    if margin_acc is not None:
        reasons += _gaps(pgd_acc, margin_acc, "PGD on cross-entropy leaves far more correct than PGD on the margin "
                         "loss", "A saturated softmax hides the gradient of cross-entropy.", n_images)
    unique = list(dict.fromkeys(warnings))
    reasons += [f"AutoAttack warned: {w}" for w in unique]
    for name, acc in (("PGD", pgd_acc), ("AutoAttack", reliable_acc), ("Margin-loss PGD", margin_acc or {})):
        reasons += _rises(acc, name, tolerance)
    if unbounded_acc is not None and unbounded_acc > chance + CHANCE_MARGIN:
        reasons.append(f"Under an unbounded attack (PGD that may change every pixel completely) the model still "
                       f"classifies {_pct(unbounded_acc)} correctly, above chance ({_pct(chance)}) plus "
                       f"{_pct(CHANCE_MARGIN)}: an honest model falls to about 0 there, so its gradients are "
                       "useless to the attack.")
    return MaskingReport(bool(reasons), reasons, dict(pgd_acc), dict(reliable_acc),
                         None if margin_acc is None else dict(margin_acc), unique, unbounded_acc, chance, tolerance,
                         n_images)


def unbounded_attack(norm: str, image_numel: int, steps: int = UNBOUNDED_STEPS, seed: int = 0) -> AttackSpec:
    """PGD that may reach any image: Linf eps 1 (step 0.1); L2 the [0, 1] box's diagonal sqrt(d), at most 100.

    No random start: from the clean image, a model with zero or useless gradients stays where it is
    (its clean accuracy), while a random start alone would already scramble a small image.
    """
    if norm == "linf":
        return AttackSpec(norm="linf", eps=1.0, steps=steps, step_size=0.1, random_start=False, seed=seed)
    eps = min(math.sqrt(image_numel), 100.0)
    return AttackSpec(norm=norm, eps=eps, steps=steps, step_size=2.5 * eps / steps, random_start=False, seed=seed)


def unbounded_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str = "linf",
                       n: int = UNBOUNDED_IMAGES, steps: int = UNBOUNDED_STEPS, batch_size: int = 128,
                       device: str | torch.device = "cpu") -> float:
    """Accuracy of `model` on the first n images of x (N, C, H, W) in [0, 1], labels y (N,), under
    `unbounded_attack`. An honest model falls to about 0; a gradient-masked one stays near its clean
    accuracy. The model's mode and weights are left untouched (set eval mode first).
    """
    spec = unbounded_attack(norm, x[0].numel(), steps)
    x, y = x[:n].to(device), y[:n].to(device)
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        x_adv = pgd(model, xb, yb, spec)
        with torch.no_grad():
            correct += int((model(x_adv).argmax(1) == yb).sum())
    return correct / max(len(x), 1)
