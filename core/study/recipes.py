"""The study's models: which to train (recipes), training each once, and loading it.

A `Recipe` names a model and says how to make it; `default_recipes` is the set behind
`python -m core reproduce` and the app's first run. Checkpoints live under cache/models/ by the
key of their ModelSpec, so a recipe trained once is reused by every later run and process.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
from filelock import FileLock
from torch import nn

from core.config import AttackSpec, DataSpec, DistillSpec, ModelSpec, TrainSpec, cache_dir, stable_key
from core.engine.data import dataset_folder, load_dataset
from core.engine.distill import MANIPULATIONS
from core.engine.group import grouping_pays
from core.engine.logits import get_or_compute
from core.engine.models import build_model, checkpoint_ok, load_checkpoint, save_checkpoint, train_dtype
from core.engine.train import CancelFn, ProgressFn, shared_config, train_group
from core.engine.zoo import LOGITSCOPE_DATASETS, load_zoo_model, logitscope_dataset, zoo_model_key, zoo_source
from core.errors import LogitscopeError
from core.storage import atomic_write, cache_lock, safe_part
from core.study.hyper import hyper

MAX_GROUP = 16  # models trained together at most: a group's activations grow with it


@dataclass(frozen=True)
class Recipe:
    name: str                      # unique within a study, e.g. "pgd-at" or "student:pgd-at:shuffle_nonmax"
    role: str                      # "standard" | "adversarial" | "student" | "zoo" (RobustBench, nothing to train)
    spec: ModelSpec
    teacher: "Recipe | None" = None
    model_key: str | None = None   # the cache key when it is not the spec's (zoo models: zoo_model_key)

    @property
    def key(self) -> str:
        return self.model_key or self.spec.key()

    @property
    def zoo(self) -> tuple[str, str, str] | None:
        """(zoo dataset, threat, name) of a RobustBench model, else None."""
        if self.role != "zoo":
            return None
        _, ds, threat, name = self.spec.arch.split(":", 3)
        return ds, threat, name

    @property
    def manipulation(self) -> str | None:
        return self.spec.train.distill.manipulation if self.spec.train.distill else None


def teacher_recipes(dataset: str = "digits", seed: int = 0, arch: str | None = None) -> list[Recipe]:
    """Standard, PGD-AT and TRADES models of the dataset's defaults (`arch` overrides its architecture)."""
    h = hyper(dataset)
    arch = arch or h.arch
    atk = AttackSpec(norm="linf", eps=h.train_eps, steps=h.train_steps, seed=seed)
    base = TrainSpec(epochs=h.epochs, lr=h.lr, seed=seed, batch_size=h.batch_size, train_limit=h.train_limit)
    return [
        Recipe("standard", "standard", ModelSpec(arch, dataset, base)),
        Recipe("pgd-at", "adversarial", ModelSpec(arch, dataset, replace(base, method="pgd", attack=atk))),
        Recipe("trades", "adversarial", ModelSpec(arch, dataset, replace(base, method="trades", attack=atk,
                                                                         trades_beta=h.trades_beta))),
    ]


def fast_at_recipe(dataset: str = "digits", seed: int = 0, arch: str | None = None) -> Recipe:
    """Fast AT (FGSM-RS, Wong et al. 2020) with the dataset's defaults: PGD-AT's budget at 1/5 of the cost."""
    h = hyper(dataset)
    atk = AttackSpec(norm="linf", eps=h.train_eps, steps=1, seed=seed)
    spec = TrainSpec(method="fgsm", epochs=h.epochs, lr=h.lr, seed=seed, batch_size=h.batch_size,
                     train_limit=h.train_limit, attack=atk)
    return Recipe("fast-at", "adversarial", ModelSpec(arch or h.arch, dataset, spec))


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
                                                 seed=t.seed if seed is None else seed, distill=d,
                                                 batch_size=t.batch_size, train_limit=t.train_limit))
    return Recipe(f"student:{teacher.name}:{manipulation}", "student", spec, teacher)


def default_recipes(dataset: str = "digits", seed: int = 0, arch: str | None = None) -> list[Recipe]:
    """Standard, PGD-AT and TRADES teachers; students of PGD-AT with every manipulation and of standard."""
    teachers = teacher_recipes(dataset, seed, arch)
    standard, at = teachers[0], teachers[1]
    students = [student_recipe(at, m) for m in MANIPULATIONS] + [student_recipe(standard, "none")]
    return teachers + students


def zoo_recipe(name: str, dataset: str = "cifar10", threat: str = "Linf") -> Recipe:
    """A RobustBench model (`core.engine.zoo`) as a recipe: nothing to train, logits cached under zoo_model_key.

    Its name in the app is "rb:<name>" ("rb:<threat>:<name>" for threats other than Linf).
    """
    label = f"rb:{name}" if threat == "Linf" else f"rb:{threat}:{name}"
    spec = ModelSpec(f"robustbench:{dataset}:{threat}:{name}", logitscope_dataset(dataset), TrainSpec())
    return Recipe(label, "zoo", spec, model_key=zoo_model_key(dataset, threat, name))


def _evaluated_path() -> Path:
    return cache_dir() / "models" / "robustbench" / "evaluated.json"


def evaluated_zoo(dataset: str | None = None) -> list[dict]:
    """Zoo models whose logits `python -m core precompute --zoo` computed into this cache.

    Each is {"dataset" (the zoo's), "threat", "name", "key", "output_kind"} ("logits", "probabilities",
    "log-probabilities", or None before the model was loaded); `dataset` keeps those whose test images
    are that Logitscope dataset's.
    """
    path = _evaluated_path()
    if not path.is_file():
        return []
    try:
        items = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LogitscopeError(f"{path} is unreadable ({type(exc).__name__}): delete it and run precompute "
                              "--zoo again.") from exc
    return [e for e in items if dataset is None or LOGITSCOPE_DATASETS.get(e.get("dataset")) == dataset]


def remember_zoo(dataset: str, threat: str, name: str, output_kind: str | None = None) -> None:
    """Add (or update) a zoo model in the list of evaluated ones, which the app's model pickers offer."""
    path = _evaluated_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = zoo_model_key(dataset, threat, name)
    with FileLock(str(path) + ".lock"):
        items = evaluated_zoo()
        old = next((e for e in items if e["key"] == key), {})
        items = [e for e in items if e["key"] != key] + [{
            "dataset": dataset, "threat": threat, "name": name, "key": key,
            "output_kind": output_kind or old.get("output_kind")}]
        atomic_write(path, json.dumps(items, indent=1).encode())


def zoo_recipes(dataset: str) -> list[Recipe]:
    """Recipes of the zoo models evaluated on `dataset` in this cache."""
    return [zoo_recipe(e["name"], e["dataset"], e["threat"]) for e in evaluated_zoo(dataset)]


def checkpoint_path(recipe: Recipe) -> Path:
    folder = safe_part(dataset_folder(recipe.spec.dataset), "Dataset folder")
    return cache_dir() / "models" / folder / safe_part(f"{recipe.key}.pt", "Model key")


def is_trained(recipe: Recipe) -> bool:
    """The checkpoint exists and is intact (zoo models count as trained: they are RobustBench's).

    A corrupt or truncated checkpoint counts as untrained: it is reported once and trained again.
    """
    return recipe.role == "zoo" or checkpoint_ok(checkpoint_path(recipe), recipe.key)


def ensure_model(recipe: Recipe, device: str | torch.device = "cpu", progress: ProgressFn | None = None,
                 cancel: CancelFn | None = None, data_dir: str | None = None,
                 on_start: Callable[[Recipe], None] | None = None) -> Path:
    """The recipe's checkpoint path, training it (and its teacher, first) if it is not cached."""
    if recipe.zoo is not None:
        raise LogitscopeError(f"{recipe.name} is a RobustBench model: it is downloaded, not trained.")
    path = checkpoint_path(recipe)
    if checkpoint_ok(path, recipe.key):  # a corrupt, truncated or foreign file is reported once and trained again
        return path
    _train_together([recipe], device, progress, cancel, data_dir, on_start)
    return path


def _teacher_logits(recipe: Recipe, device: str | torch.device, progress: ProgressFn | None, cancel: CancelFn | None,
                    data_dir: str | None, on_start: Callable[[Recipe], None] | None) -> torch.Tensor | None:
    """A student's teacher's clean logits on the training split it learns from (the teacher trained first)."""
    if recipe.teacher is None:
        return None
    teacher = recipe.teacher
    teacher_path = ensure_model(teacher, device, progress, cancel, data_dir, on_start)
    data = DataSpec(recipe.spec.dataset, "train", recipe.spec.train.train_limit)  # what the student sees
    return get_or_compute(lambda: load_checkpoint(teacher_path, device, teacher.key), teacher.key, data,
                          device=device, data_dir=data_dir).logits


def _train_together(recipes: Sequence[Recipe], device: str | torch.device, progress: ProgressFn | None,
                    cancel: CancelFn | None, data_dir: str | None,
                    on_start: Callable[[Recipe], None] | None) -> None:
    """Train recipes of one group (`group_key`) in one pass and save each checkpoint as if trained alone.

    Two processes (or sessions) training the same recipe: the second waits, then reuses the checkpoint;
    a cancelled job stops waiting. Locks are taken in key order, so two groups sharing recipes cannot
    deadlock. Training writes nothing until save_checkpoint's atomic rename.
    """
    teachers = [_teacher_logits(r, device, progress, cancel, data_dir, on_start) for r in recipes]
    with contextlib.ExitStack() as locks:
        for r in sorted(recipes, key=lambda r: r.key):
            locks.enter_context(cache_lock(str(checkpoint_path(r)) + ".lock", cancel))
        todo = [(r, t) for r, t in zip(recipes, teachers) if not checkpoint_ok(checkpoint_path(r), r.key)]
        if not todo:
            return
        for r, _ in todo:
            if on_start is not None:
                on_start(r)
        ds = load_dataset(todo[0][0].spec.dataset, data_dir)
        nets = []
        for r, _ in todo:
            torch.manual_seed(r.spec.train.seed)  # the initial weights are part of what the seed fixes
            nets.append(build_model(r.spec.arch, ds.shape, ds.num_classes, ds.mean, ds.std))
        train_group(nets, ds, [r.spec.train for r, _ in todo], [t for _, t in todo], device, progress, cancel)
        for (r, _), net in zip(todo, nets):
            save_checkpoint(checkpoint_path(r), net, {
                "arch": r.spec.arch, "in_shape": list(ds.shape), "num_classes": ds.num_classes,
                "mean": list(ds.mean), "std": list(ds.std), "classes": list(ds.classes),
                "name": r.name, "role": r.role, "key": r.key, "spec": r.spec.to_dict(),
                "precision": str(train_dtype(device)).removeprefix("torch."), "trained_with": len(todo),
            })


def group_key(recipe: Recipe) -> str:
    """Recipes with the same group key can train together: one architecture, dataset and training
    configuration, differing only in seed and in what a student learns (`core.engine.train.train_group`)."""
    shared = shared_config(recipe.spec.train)
    return stable_key({"arch": recipe.spec.arch, "dataset": recipe.spec.dataset, "train": shared.to_dict()})


def ensure_models(recipes: Sequence[Recipe], device: str | torch.device = "cpu", progress: ProgressFn | None = None,
                  cancel: CancelFn | None = None, data_dir: str | None = None,
                  on_start: Callable[[Recipe], None] | None = None, group: bool | None = None,
                  max_group: int = MAX_GROUP) -> list[Path]:
    """Every recipe's checkpoint path, training the missing ones (teachers first).

    With `group` (default: `core.engine.group.grouping_pays(device)`, i.e. on CUDA), missing recipes of one
    group (`group_key`: seeds of one recipe, students of one teacher under every manipulation, replicates
    of a lab run) train together in one pass of `train_group`, at most `max_group` at a time; each
    checkpoint is the one `ensure_model` would write. Otherwise one after another.
    """
    group = grouping_pays(device) if group is None else group
    local = [r for r in recipes if r.zoo is None]
    if group:
        teachers = {r.teacher.key: r.teacher for r in local if r.teacher is not None}
        if teachers:
            ensure_models(list(teachers.values()), device, progress, cancel, data_dir, on_start, group, max_group)
        by_group: dict[str, list[Recipe]] = {}
        for r in local:
            if not is_trained(r) and all(r.key != o.key for o in by_group.get(group_key(r), [])):
                by_group.setdefault(group_key(r), []).append(r)
        for members in by_group.values():
            for i in range(0, len(members), max_group):
                _train_together(members[i:i + max_group], device, progress, cancel, data_dir, on_start)
    return [ensure_model(r, device, progress, cancel, data_dir, on_start) for r in local]


def model_source(recipe: Recipe, device: str | torch.device = "cpu", progress: ProgressFn | None = None,
                 cancel: CancelFn | None = None, data_dir: str | None = None,
                 on_start: Callable[[Recipe], None] | None = None) -> Callable[[], nn.Module]:
    """A loader of the recipe's model for `core.engine.logits.get_grid`, called only on a cache miss.

    Local recipes are trained first if missing (see `ensure_model`); zoo models download on first load.
    """
    if recipe.zoo is not None:
        ds, threat, name = recipe.zoo
        return zoo_source(name, ds, threat, device)
    path = ensure_model(recipe, device, progress, cancel, data_dir, on_start)
    return lambda: load_checkpoint(path, device, recipe.key)


def load_model(recipe: Recipe, device: str | torch.device = "cpu") -> nn.Module:
    """The recipe's model (a zoo model is downloaded if needed); raises if a local one is not trained."""
    if recipe.zoo is not None:
        ds, threat, name = recipe.zoo
        return load_zoo_model(name, ds, threat, device)
    path = checkpoint_path(recipe)
    if not path.is_file():
        raise LogitscopeError(f"Model {recipe.name!r} is not trained yet: train it first.")
    return load_checkpoint(path, device, recipe.key)
