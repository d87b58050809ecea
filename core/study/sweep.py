"""Sweeps: one recipe per combination of method, training epsilon, seed and architecture (and students).

`python -m core sweep --dataset digits --methods standard,pgd-at,trades --train-eps 0.05,0.1,0.2,0.3
--seeds 0,1,2` trains and evaluates every combination through the same recipes, training loop and
logits cache as the default study (`core.study.precompute` does the work, unit by unit, on an
executor). A standard model does not depend on the training epsilon, so it is one model per seed and
architecture, whatever the epsilons. A combination equal to a default-study model (PGD-AT at the
dataset's training epsilon, seed 0, its architecture) has the same key, so its checkpoint and logits
are shared.

The sweep's recipes are remembered in the cache (cache/sweeps/<dataset folder>.json), so the app lists
every swept model (`swept_recipes`) beside the default study and the zoo.

Names: "pgd-at-eps0.1-s1", "standard-s0", "trades-eps0.2-s0-small_cnn" (architecture named when it is
not the dataset's), "student:pgd-at-eps0.1-s1:shuffle_nonmax".

Example:
    >>> grid = SweepGrid("digits", methods=("standard", "pgd-at"), train_eps=(0.1, 0.2), seeds=(0, 1))
    >>> [r.name for r in sweep_recipes(grid)]
    ['standard-s0', 'pgd-at-eps0.1-s0', 'pgd-at-eps0.2-s0', 'standard-s1', ...]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from filelock import FileLock

from core.config import AttackSpec, ModelSpec, TrainSpec, cache_dir
from core.engine.data import dataset_folder
from core.engine.distill import MANIPULATIONS
from core.engine.models import ARCHS
from core.errors import LogitscopeError
from core.storage import atomic_write, safe_part
from core.study.hyper import hyper
from core.study.recipes import Recipe, student_recipe

METHODS = ("standard", "pgd-at", "trades", "fast-at")  # what --methods accepts
MAX_MODELS = 512  # models per sweep: a typo in a list should not start a week of training


@dataclass(frozen=True)
class SweepGrid:
    """The combinations of a sweep. `train_eps` in pixel units (Linf); `archs` empty: the dataset's."""

    dataset: str
    methods: tuple[str, ...] = ("standard", "pgd-at", "trades")
    train_eps: tuple[float, ...] = ()  # empty: the dataset's training epsilon
    seeds: tuple[int, ...] = (0,)
    archs: tuple[str, ...] = ()
    students: tuple[str, ...] = ()  # manipulations: a student of every teacher under each

    def check(self) -> None:
        """Raise LogitscopeError with what to do for an empty or unknown choice."""
        h = hyper(self.dataset)
        bad = [m for m in self.methods if m not in METHODS]
        if not self.methods or bad:
            raise LogitscopeError(f"--methods: unknown {', '.join(bad) or '(none given)'}; choose from {', '.join(METHODS)}.")
        bad = [a for a in self.archs if a not in ARCHS]
        if bad:
            raise LogitscopeError(f"--archs: unknown {', '.join(bad)}; choose from {', '.join(sorted(ARCHS))}.")
        bad = [m for m in self.students if m not in MANIPULATIONS]
        if bad:
            raise LogitscopeError(f"--students: unknown manipulation {', '.join(bad)}; choose from "
                                  f"{', '.join(MANIPULATIONS)}.")
        if any(not 0 < e <= 1 for e in self.train_eps):
            raise LogitscopeError("--train-eps: each training epsilon is in pixel units, above 0 and at most 1 "
                                  f"(the dataset's is {h.train_eps:g}).")
        if not self.seeds or any(s < 0 for s in self.seeds):
            raise LogitscopeError("--seeds: give one or more seeds, each 0 or more, e.g. 0,1,2.")
        if len(self.combinations()) > MAX_MODELS:
            raise LogitscopeError(f"The sweep has {len(self.combinations())} models, more than {MAX_MODELS}: "
                                  "split it into several sweeps (they share the cache).")

    def combinations(self) -> list[tuple[str, float | None, int, str]]:
        """(method, training eps or None for standard, seed, arch), seed by seed; standard once per seed and arch."""
        h = hyper(self.dataset)
        eps = self.train_eps or (h.train_eps,)
        out = []
        for seed in self.seeds:
            for arch in self.archs or (h.arch,):
                for method in self.methods:
                    for e in [None] if method == "standard" else eps:
                        out.append((method, e, seed, arch))
        return list(dict.fromkeys(out))


def teacher_name(method: str, eps: float | None, seed: int, arch: str, default_arch: str) -> str:
    name = method if eps is None else f"{method}-eps{eps:g}"
    return f"{name}-s{seed}" + ("" if arch == default_arch else f"-{arch}")


def teacher(dataset: str, method: str, eps: float | None, seed: int, arch: str) -> Recipe:
    """One trained-from-scratch model of the sweep, with the dataset's defaults apart from these four."""
    h = hyper(dataset)
    base = TrainSpec(epochs=h.epochs, lr=h.lr, seed=seed, batch_size=h.batch_size, train_limit=h.train_limit)
    name = teacher_name(method, eps, seed, arch, h.arch)
    if method == "standard":
        return Recipe(name, "standard", ModelSpec(arch, dataset, base))
    steps = 1 if method == "fast-at" else h.train_steps  # fast AT: FGSM with a random start (Wong et al. 2020)
    atk = AttackSpec(norm="linf", eps=float(eps), steps=steps, seed=seed)
    train = {"pgd-at": replace(base, method="pgd", attack=atk),
             "trades": replace(base, method="trades", attack=atk, trades_beta=h.trades_beta),
             "fast-at": replace(base, method="fgsm", attack=atk)}[method]
    return Recipe(name, "adversarial", ModelSpec(arch, dataset, train))


def sweep_recipes(grid: SweepGrid) -> list[Recipe]:
    """Every model of the sweep: the teachers, then their students (manipulation by manipulation)."""
    grid.check()
    teachers = [teacher(grid.dataset, *c) for c in grid.combinations()]
    students = [student_recipe(t, m) for t in teachers for m in grid.students]
    return teachers + students


def method_of(recipe: Recipe) -> str:
    """The method as --methods names it ("standard", "pgd-at", "trades", "fast-at"), "student" or "zoo"."""
    if recipe.role in ("student", "zoo"):
        return recipe.role
    return {"standard": "standard", "pgd": "pgd-at", "trades": "trades", "fgsm": "fast-at"}.get(
        recipe.spec.train.method, recipe.spec.train.method)


def train_eps_of(recipe: Recipe) -> float | None:
    """The training epsilon of an adversarially-trained model (its teacher's, for a student); else None."""
    spec = recipe.teacher.spec if recipe.teacher is not None else recipe.spec
    return spec.train.attack.eps if spec.train.attack is not None else None


def _registry(dataset: str) -> Path:
    return cache_dir() / "sweeps" / safe_part(f"{dataset_folder(dataset)}.json", "Dataset folder")


def _to_dict(recipe: Recipe) -> dict:
    return {"name": recipe.name, "role": recipe.role, "spec": recipe.spec.to_dict(),
            "teacher": _to_dict(recipe.teacher) if recipe.teacher is not None else None}


def _from_dict(d: dict) -> Recipe:
    teacher = _from_dict(d["teacher"]) if d.get("teacher") else None
    return Recipe(str(d["name"]), str(d["role"]), ModelSpec.from_dict(d["spec"]), teacher)


def remember_sweep(dataset: str, recipes: list[Recipe]) -> None:
    """Add a sweep's recipes to the dataset's list of swept models (a name seen before is replaced)."""
    path = _registry(dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        known = {r.name: r for r in swept_recipes(dataset)}
        known.update({r.name: r for r in recipes})
        atomic_write(path, json.dumps([_to_dict(r) for r in known.values()], indent=1).encode())


def swept_recipes(dataset: str) -> list[Recipe]:
    """Every model a sweep of this dataset planned in this cache, in the order they were first swept."""
    path = _registry(dataset)
    if not path.is_file():
        return []
    try:
        return [_from_dict(d) for d in json.loads(path.read_text())]
    except (OSError, ValueError, KeyError, TypeError, LogitscopeError) as exc:
        raise LogitscopeError(f"The list of swept models {path} is unreadable ({type(exc).__name__}): delete it and "
                              "run the sweep again (trained models and logits stay in the cache).") from exc
