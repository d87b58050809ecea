"""The study of the paper: which models to train, training them once, and measuring them.

A `Recipe` names a model and says how to make it; `default_recipes` is the set behind
`python -m core reproduce` and the app's first run. Checkpoints live under cache/models/ by the
key of their ModelSpec, so a recipe trained once is reused by every later run and process.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock
from torch import nn

from core.config import AttackSpec, DataSpec, DistillSpec, ModelSpec, TrainSpec, cache_dir
from core.data import load_dataset
from core.distill import MANIPULATIONS
from core.errors import LogitscopeError
from core.logits import get_or_compute
from core.models import build_model, load_checkpoint, save_checkpoint
from core.train import CancelFn, ProgressFn, train


@dataclass(frozen=True)
class Hyper:
    """Defaults of one dataset, with units and the reason for each value."""

    arch: str
    epochs: int           # passes over the training split; digits converges in ~20 at this lr
    lr: float             # peak Adam learning rate of the one-cycle schedule
    train_eps: float      # Linf budget of PGD-AT and TRADES in pixel units: 0.2 is the paper-scale
                          # budget for 8x8 digits (about 3 of 16 grey levels)
    train_steps: int      # PGD steps during training: 5 steps reach most of PGD-20's loss at 1/4 of the cost
    trades_beta: float    # TRADES robustness weight; 6 is Zhang et al.'s choice
    temperature: float    # distillation temperature: 4 exposes the non-max logits without flattening them
    eps_grid: tuple[float, ...]  # evaluation epsilons (Linf, pixel units); 0 is clean
    eval_steps: int       # PGD steps for evaluation: PGD-20, step 2.5 * eps / 20


HYPER: dict[str, Hyper] = {
    "digits": Hyper(arch="digits_cnn", epochs=20, lr=4e-3, train_eps=0.2, train_steps=5, trades_beta=6.0,
                    temperature=4.0, eps_grid=(0.0, 0.05, 0.1, 0.15, 0.2, 0.3), eval_steps=20),
}


def hyper(dataset: str) -> Hyper:
    if dataset not in HYPER:
        raise LogitscopeError(f"No default training recipe for dataset {dataset!r}; available: {', '.join(HYPER)}.")
    return HYPER[dataset]


def eval_attack(dataset: str, norm: str = "linf", steps: int | None = None, seed: int = 0) -> AttackSpec:
    """The evaluation attack; its eps is a placeholder set per grid point."""
    return AttackSpec(norm=norm, eps=0.0, steps=hyper(dataset).eval_steps if steps is None else steps, seed=seed)


@dataclass(frozen=True)
class Recipe:
    name: str                      # unique within a study, e.g. "pgd-at" or "student:pgd-at:shuffle_nonmax"
    role: str                      # "standard" | "adversarial" | "student"
    spec: ModelSpec
    teacher: "Recipe | None" = None

    @property
    def key(self) -> str:
        return self.spec.key()

    @property
    def manipulation(self) -> str | None:
        return self.spec.train.distill.manipulation if self.spec.train.distill else None


def teacher_recipes(dataset: str = "digits", seed: int = 0) -> list[Recipe]:
    h = hyper(dataset)
    atk = AttackSpec(norm="linf", eps=h.train_eps, steps=h.train_steps, seed=seed)
    base = TrainSpec(epochs=h.epochs, lr=h.lr, seed=seed)
    return [
        Recipe("standard", "standard", ModelSpec(h.arch, dataset, base)),
        Recipe("pgd-at", "adversarial", ModelSpec(h.arch, dataset, replace(base, method="pgd", attack=atk))),
        Recipe("trades", "adversarial", ModelSpec(h.arch, dataset, replace(base, method="trades", attack=atk,
                                                                           trades_beta=h.trades_beta))),
    ]


def student_recipe(teacher: Recipe, manipulation: str = "none", temperature: float | None = None,
                   hard_weight: float = 0.0, fraction: float = 1.0, epochs: int | None = None,
                   seed: int | None = None) -> Recipe:
    """A student of `teacher`, same architecture, distilled on clean inputs of the training split."""
    if manipulation not in MANIPULATIONS:
        raise LogitscopeError(f"Unknown manipulation {manipulation!r}: choose one of {', '.join(MANIPULATIONS)}.")
    h = hyper(teacher.spec.dataset)
    d = DistillSpec(teacher=teacher.key, manipulation=manipulation,
                    temperature=h.temperature if temperature is None else temperature,
                    hard_weight=hard_weight, fraction=fraction)
    t = teacher.spec.train
    spec = replace(teacher.spec, train=TrainSpec(method="distill", epochs=epochs or h.epochs, lr=h.lr,
                                                 seed=t.seed if seed is None else seed, distill=d))
    return Recipe(f"student:{teacher.name}:{manipulation}", "student", spec, teacher)


def default_recipes(dataset: str = "digits", seed: int = 0) -> list[Recipe]:
    """Standard, PGD-AT and TRADES teachers; students of PGD-AT with every manipulation and of standard."""
    teachers = teacher_recipes(dataset, seed)
    standard, at = teachers[0], teachers[1]
    students = [student_recipe(at, m) for m in MANIPULATIONS] + [student_recipe(standard, "none")]
    return teachers + students


def checkpoint_path(recipe: Recipe) -> Path:
    return cache_dir() / "models" / recipe.spec.dataset / f"{recipe.key}.pt"


def is_trained(recipe: Recipe) -> bool:
    return checkpoint_path(recipe).is_file()


def ensure_model(recipe: Recipe, device: str | torch.device = "cpu", progress: ProgressFn | None = None,
                 cancel: CancelFn | None = None, data_dir: str | None = None,
                 on_start: Callable[[Recipe], None] | None = None) -> Path:
    """The recipe's checkpoint path, training it (and its teacher, first) if it is not cached."""
    path = checkpoint_path(recipe)
    if path.is_file():
        return path
    teacher_logits = None
    if recipe.teacher is not None:
        teacher_path = ensure_model(recipe.teacher, device, progress, cancel, data_dir, on_start)
        data = DataSpec(recipe.spec.dataset, "train")
        teacher_logits = get_or_compute(lambda: load_checkpoint(teacher_path, device), recipe.teacher.key, data,
                                        device=device, data_dir=data_dir).logits
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):  # two processes training the same recipe: the second waits
        if path.is_file():
            return path
        if on_start is not None:
            on_start(recipe)
        ds = load_dataset(recipe.spec.dataset, data_dir)
        model = build_model(recipe.spec.arch, ds.shape, ds.num_classes, ds.mean, ds.std)
        train(model, ds, recipe.spec.train, teacher_logits, device, progress, cancel)
        save_checkpoint(path, model, {
            "arch": recipe.spec.arch, "in_shape": list(ds.shape), "num_classes": ds.num_classes,
            "mean": list(ds.mean), "std": list(ds.std), "classes": list(ds.classes),
            "name": recipe.name, "role": recipe.role, "key": recipe.key, "spec": recipe.spec.to_dict(),
        })
    return path


def load_model(recipe: Recipe, device: str | torch.device = "cpu") -> nn.Module:
    path = checkpoint_path(recipe)
    if not path.is_file():
        raise LogitscopeError(f"Model {recipe.name!r} is not trained yet: train it first.")
    return load_checkpoint(path, device)
