"""The evidence behind every stated number: which attacks evaluate a model, and what they say together.

Beside the PGD grid the pages scrub (fast, an upper bound on robust accuracy), a model is evaluated by
- the reliable attack (AutoAttack, `core.study.hyper.reliable_attack`) at the findings' epsilon: the
  robust accuracy the report, the overview, the lab and the findings state;
- PGD on the margin loss at that epsilon, and PGD that may change every pixel completely (Linf eps 1):
  with AutoAttack's own warnings, the numbers of the gradient-masking check (`core.engine.masking`).
Every one of them is a logits-cache entry, computed once and read everywhere. Only the findings'
epsilon gets AutoAttack by default: on the digits PGD-AT model it costs about 11 s per epsilon on two
CPU cores, against 1.5 s for PGD-20 over the whole grid; `Evidence(reliable_eps=...)` adds more.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from core.config import AttackSpec, DataSpec, with_clean
from core.engine import analysis
from core.engine.data import load_dataset
from core.engine.logits import entry_ok, get_grid, read
from core.engine.masking import MaskingReport, masking_check, unbounded_attack
from core.study.findings import NEEDS, ROBUST_IDS, Finding, ModelResult, compute_findings
from core.study.hyper import eps_grid, eval_attack, hyper, reliable_attack
from core.study.recipes import Recipe

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class Evidence:
    """The attacks that evaluate a dataset's models, and at which epsilons."""

    dataset: str
    pgd: AttackSpec                 # the fast attack of the pages (eps a placeholder)
    reliable: AttackSpec            # AutoAttack (eps a placeholder)
    grid: tuple[float, ...]         # PGD's epsilons, 0 included
    reliable_eps: tuple[float, ...]  # AutoAttack's epsilons, 0 included; the findings' eps among them
    eps: float                      # the findings' epsilon
    data_dir: str | None = None     # where the dataset is read from (the L2 unbounded radius needs its size)

    @property
    def margin(self) -> AttackSpec:
        """PGD with the margin loss: a saturated softmax cannot hide its gradient."""
        return replace(self.pgd, loss="margin")

    @property
    def unbounded(self) -> AttackSpec:
        """PGD that may reach any image: Linf eps 1; L2 the diagonal of the image's [0, 1] box."""
        numel = 1 if self.pgd.norm == "linf" else int(np.prod(load_dataset(self.dataset, self.data_dir).shape))
        return unbounded_attack(self.pgd.norm, numel, seed=self.pgd.seed)

    def entries(self) -> list[tuple[AttackSpec, tuple[float, ...]]]:
        """(attack, epsilons) of every cache entry a model needs, the PGD grid first."""
        return [(self.pgd, self.grid), (self.reliable, self.reliable_eps), (self.margin, (self.eps,)),
                (self.unbounded, (self.unbounded.eps,))]

    def describe(self) -> str:
        return self.reliable.at(self.eps).describe()


def evidence(dataset: str, norm: str = "linf", steps: int | None = None, version: str = "fast", seed: int = 0,
             reliable_eps: Sequence[float] | None = None, data_dir: str | None = None,
             grid: Sequence[float] | None = None) -> Evidence:
    """The evidence plan of a dataset: its PGD grid, and AutoAttack at the findings' epsilon (or `reliable_eps`)."""
    grid = with_clean(grid if grid is not None else eps_grid(dataset, norm, data_dir))
    eps = finding_eps(dataset, norm, grid)
    extra = [eps] if reliable_eps is None else [*reliable_eps, eps]
    return Evidence(dataset, eval_attack(dataset, norm, steps, seed), reliable_attack(dataset, norm, version, seed),
                    grid, with_clean(extra), eps, data_dir)


def finding_eps(dataset: str, norm: str, grid: Sequence[float]) -> float:
    """The epsilon the findings are stated at: the dataset's `finding_eps` (Linf), scaled onto the grid for L2.

    Its position in the grid is what carries over between norms (the L2 grid is the Linf grid scaled).
    """
    linf = with_clean(hyper(dataset).eps_grid)
    target = hyper(dataset).finding_eps
    index = min(range(len(linf)), key=lambda i: abs(linf[i] - target))
    grid = with_clean(grid)
    return grid[min(index, len(grid) - 1)] if norm != "linf" else min(grid, key=lambda e: abs(e - target))


def is_complete(recipe: Recipe, data: DataSpec, ev: Evidence) -> bool:
    """Every entry of the plan is cached (and intact) for this model."""
    return all(entry_ok(recipe.key, data, None if e == 0 else attack.at(e)) for attack, eps in ev.entries()
               for e in eps)


def ensure(source: Callable[[], nn.Module], recipe: Recipe, data: DataSpec, ev: Evidence,
           device: str | torch.device = "cpu", progress: Progress | None = None,
           cancel: Callable[[], bool] | None = None, data_dir: str | None = None,
           entries: Sequence[tuple[AttackSpec, tuple[float, ...]]] | None = None) -> None:
    """Compute whatever entries of the plan (or of `entries`, some of `ev.entries()`) are missing for this model
    (the model loads only if needed)."""
    say = progress or (lambda what, fraction: None)
    net: list[nn.Module] = []

    def model() -> nn.Module:
        if not net:
            net.append(source())
        return net[0]

    for attack, eps in ev.entries() if entries is None else entries:
        label = f"{recipe.name}: {attack.describe()}"
        say(label, 0.0)
        get_grid(model, recipe.key, data, attack, eps, device, on_batch=lambda b, n, label=label: say(label, b / n),
                 data_dir=data_dir, cancel=cancel)


def _accuracy(recipe: Recipe, data: DataSpec, attack: AttackSpec, eps: Sequence[float]) -> dict[float, float]:
    out = {}
    for e in eps:
        rec = read(recipe.key, data, None if e == 0 else attack.at(e))
        if rec is not None:
            out[float(e)] = analysis.accuracy(rec.logits, rec.labels)
    return out


def masking(recipe: Recipe, data: DataSpec, ev: Evidence, n_classes: int) -> MaskingReport | None:
    """The gradient-masking check of one model from its cached entries (None until they are all cached)."""
    if not is_complete(recipe, data, ev):
        return None
    warnings = []
    for e in ev.reliable_eps:
        rec = read(recipe.key, data, None if e == 0 else ev.reliable.at(e))
        warnings += list(rec.warnings) if rec is not None else []
    unbounded = _accuracy(recipe, data, ev.unbounded, (ev.unbounded.eps,))
    clean = read(recipe.key, data, None)
    return masking_check(_accuracy(recipe, data, ev.pgd, ev.grid), _accuracy(recipe, data, ev.reliable, ev.reliable_eps),
                         {0.0: analysis.accuracy(clean.logits, clean.labels), **_accuracy(recipe, data, ev.margin,
                                                                                          (ev.eps,))},
                         warnings, unbounded.get(float(ev.unbounded.eps)), n_classes, len(clean.labels))


def model_result(recipe: Recipe, data: DataSpec, ev: Evidence, attack: AttackSpec | None = None) -> ModelResult | None:
    """Clean logits, and per-image correctness under `attack` (default: the reliable one) at the findings' eps
    when that entry is cached (else robust_correct is None); None without clean logits."""
    clean = read(recipe.key, data, None)
    if clean is None:
        return None
    return ModelResult.from_records(clean, read(recipe.key, data, (attack or ev.reliable).at(ev.eps)))


def provisional_label(ev: Evidence) -> str:
    """The attack of a provisional finding (`findings(..., provisional=True)`), in words."""
    return (f"{ev.pgd.at(ev.eps).describe()}, an upper bound on robust accuracy; provisional until "
            f"{ev.reliable.describe()} at eps {ev.eps:g} is computed")


def _results(per_seed: Sequence[Sequence[Recipe]], data: DataSpec, ev: Evidence,
             attack: AttackSpec) -> list[dict[str, ModelResult]]:
    got = [{r.name: model_result(r, data, ev, attack) for r in recipes} for recipes in per_seed]
    return [{n: m for n, m in seed.items() if m is not None} for seed in got]


def findings(per_seed: Sequence[Sequence[Recipe]], data: DataSpec, ev: Evidence,
             provisional: bool = False) -> list[Finding]:
    """The five findings' verdicts from the cache: one list of the study's recipes per seed.

    Each finding is stated as soon as what it reads is cached: 1 and 2 the clean logits of their models, the
    3s also the reliable attack's entries at the findings' eps (from the seeds that have them). With
    `provisional`, a 3 without them in any seed is stated from the PGD grid's entries at that eps instead,
    marked `provisional` (an upper bound on robust accuracy; the reliable statement replaces it when its
    entries are there). The report states after computing everything, so never provisionally.
    """
    found = compute_findings(_results(per_seed, data, ev, ev.reliable), ev.eps, ev.describe())
    rest = [fid for fid in ROBUST_IDS if fid not in {f.id for f in found}]
    if provisional and rest:
        pgd = compute_findings(_results(per_seed, data, ev, ev.pgd), ev.eps, provisional_label(ev), ids=rest)
        order = list(NEEDS)
        found = sorted(found + [replace(f, provisional=True) for f in pgd], key=lambda f: order.index(f.id))
    return found
