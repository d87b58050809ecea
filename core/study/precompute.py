"""`python -m core precompute`: logits of chosen models over an epsilon grid, resumable after an interruption.

The work is cut into units, and each unit lands in the cache as soon as it finishes:
- training a missing local model (its checkpoint, through `core.study.ensure_model`);
- one model at one epsilon on the evaluation split (one entry of `core.engine.logits`);
- on big splits (more than `CHUNK_IMAGES` images), one model at one epsilon on one chunk of images
  (`core.study.units`: chunks, their parts and joining them).
- with `evidence=True`, one model's evidence plan (`core.study.evidence`: AutoAttack at the findings'
  epsilon, margin-loss and unbounded PGD, and the default PGD grid the masking check reads), computed
  by `evidence.ensure` entry by entry on the whole split.
A re-run plans the same units and skips those whose files exist and pass their checks (a corrupt or
truncated entry or part counts as missing and is computed again), so an interruption (Ctrl-C, a lost
machine) costs at most the unit in progress. A joined entry is exactly what
`core.engine.logits.get_grid` computes in one pass, and what the app's pages recompute.
`precompute` runs the units in this process; `core.study.fanout.run` hands them to an executor.

Example:
    >>> recipes = select_models("cifar10", "standard,pgd-at", zoo=["Wong2020Fast"])
    >>> out = precompute("cifar10", recipes, device="cuda", progress=lambda what, f: print(what, f))
    >>> len(out.computed), len(out.skipped)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from core.config import AttackSpec, DataSpec, check_eps, with_clean
from core.engine import logits as cache
from core.engine.data import load_dataset
from core.engine.train import TrainProgress
from core.engine.zoo import LOGITSCOPE_DATASETS, find_entry, list_zoo
from core.errors import Cancelled, LogitscopeError
from core.study import evidence as plans
from core.study.evidence import Evidence
from core.study.hyper import eps_grid, eval_attack, eval_data
from core.study.recipes import Recipe, default_recipes, fast_at_recipe, model_source, remember_zoo, zoo_recipe
from core.study.units import CHUNK_IMAGES, Unit, attack_chunk, is_done, join, part_ok, part_path, plan

__all__ = ["CHUNK_IMAGES", "Outcome", "Setting", "Unit", "evaluate", "is_done", "load_dataset", "part_ok",
           "part_path", "plan", "precompute", "select_models", "setting", "unit_done", "units_of"]

Progress = Callable[[str, float], None]  # (what runs now, fraction of it done)


def local_recipes(dataset: str) -> dict[str, Recipe]:
    """Local recipes by name: the default study plus fast AT."""
    out = {r.name: r for r in default_recipes(dataset)}
    fast = fast_at_recipe(dataset)
    out[fast.name] = fast
    return out


def select_models(dataset: str, names: str | Sequence[str] = "all", zoo: Sequence[str] = (),
                  threat: str = "Linf") -> list[Recipe]:
    """Recipes for local model names ("all": the default study; "" or "none": no local model) and zoo names
    (["all"]: every zoo model of the dataset's images under `threat`)."""
    known = local_recipes(dataset)
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if list(names) == ["all"]:
        chosen = list(default_recipes(dataset))
    elif list(names) in ([], ["none"]):
        chosen = []
    else:
        unknown = [n for n in names if n not in known]
        if unknown:
            raise LogitscopeError(f"Unknown model(s) {', '.join(unknown)} for {dataset}: choose from "
                                  f"{', '.join(known)}, or all.")
        chosen = [known[n] for n in names]
    if zoo:
        zoo_ds = [z for z, ours in LOGITSCOPE_DATASETS.items() if ours == dataset]
        if not zoo_ds:
            raise LogitscopeError(f"RobustBench has no models for {dataset}: zoo models are evaluated on "
                                  f"{', '.join(LOGITSCOPE_DATASETS.values())}.")
        entries = (list_zoo(zoo_ds[0], threat) if list(zoo) == ["all"]
                   else [find_entry(name, zoo_ds[0], threat) for name in zoo])  # a clear error for a typo
        chosen += [zoo_recipe(e.name, e.dataset, e.threat) for e in entries]
    if not chosen:
        raise LogitscopeError("No models chosen: give --models (e.g. all) or --zoo NAME.")
    return list({r.key: r for r in chosen}.values())


@dataclass
class Outcome:
    """What a precompute did: units computed now, units found in the cache, models trained now."""

    data: DataSpec
    attack: AttackSpec
    grid: tuple[float, ...]
    models: list[str]
    computed: list[Unit] = field(default_factory=list)
    skipped: list[Unit] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)
    evidence: Evidence | None = None  # the evidence plan computed too, if asked for


@dataclass(frozen=True)
class Setting:
    """What every unit of one precompute shares: picklable, so a unit can run in another process or machine."""

    dataset: str
    grid: tuple[float, ...]  # PGD epsilons, clean included
    norm: str = "linf"
    steps: int | None = None
    data_dir: str | None = None
    evidence: bool = False
    reliable: str = "fast"
    reliable_eps: tuple[float, ...] | None = None
    chunk_images: int = CHUNK_IMAGES

    @property
    def data(self) -> DataSpec:
        return eval_data(self.dataset)

    @property
    def attack(self) -> AttackSpec:
        return eval_attack(self.dataset, self.norm, self.steps)

    def plan_evidence(self) -> Evidence | None:
        if not self.evidence:
            return None
        return plans.evidence(self.dataset, self.norm, self.steps, self.reliable, self.attack.seed,
                              self.reliable_eps, self.data_dir)


def setting(dataset: str, eps: Sequence[float] | None = None, norm: str = "linf", steps: int | None = None,
            data_dir: str | None = None, evidence: bool = False, reliable: str = "fast",
            reliable_eps: Sequence[float] | None = None, chunk_images: int = CHUNK_IMAGES) -> Setting:
    """The checked setting of a precompute (eps None: the dataset's grid); raises LogitscopeError for a bad one."""
    eval_attack(dataset, norm, steps)  # an unknown dataset fails here, with its message
    grid = with_clean(eps if eps is not None else eps_grid(dataset, norm, data_dir))
    for e in [*grid, *(reliable_eps or [])]:
        check_eps(e, norm)
    return Setting(dataset, grid, norm, steps, data_dir, evidence, reliable,
                   None if reliable_eps is None else tuple(float(e) for e in reliable_eps), chunk_images)


def units_of(s: Setting, recipes: Sequence[Recipe], device: str | torch.device = "cpu") -> list[Unit]:
    """Every unit of the precompute, model by model (each model's evidence unit after its PGD units)."""
    x, _ = load_dataset(s.dataset, s.data_dir).split(s.data)
    units = plan(recipes, s.grid, len(x), cache.eval_batch_size(x.shape[1:], device), s.chunk_images)
    ev = s.plan_evidence()
    if ev is not None:
        units += [Unit(r.name, r.key, ev.eps, 0, len(x), 1, kind="evidence") for r in recipes]
        order = [r.key for r in recipes]
        units.sort(key=lambda u: order.index(u.key))
    return units


def unit_done(s: Setting, recipe: Recipe, u: Unit, ev: Evidence | None = None) -> bool:
    """The unit's result is in the cache and intact (see is_done; an evidence unit: every entry of its plan)."""
    if u.kind == "evidence":
        return plans.is_complete(recipe, s.data, ev if ev is not None else s.plan_evidence())
    return is_done(u, s.data, s.attack)


def evaluate(s: Setting, recipe: Recipe, units: Sequence[Unit], device: str | torch.device = "cpu",
             report: Progress | None = None, cancel: Callable[[], bool] | None = None,
             on_start: Callable[[Recipe], None] | None = None, labels: Sequence[str] | None = None) -> list[bool]:
    """Compute the units of one model (training it first if it is missing); True for each unit computed now.

    The model loads once, and only on a cache miss: a unit another process finished meanwhile costs nothing.
    A chunk is joined into its entry as soon as its siblings are all there. `labels`: the progress label of
    each unit (default: its description).
    """
    say = report or (lambda what, fraction: None)
    stop = cancel or (lambda: False)
    data, attack, ev = s.data, s.attack, s.plan_evidence()
    x, y = load_dataset(s.dataset, s.data_dir).split(data)
    batch = cache.eval_batch_size(x.shape[1:], device)
    training = {"name": recipe.name}  # a student's teacher trains first, under its own name

    def started(t: Recipe) -> None:
        training["name"] = t.name
        if on_start is not None:
            on_start(t)

    def on_train(p: TrainProgress) -> None:
        say(f"training {training['name']}", p.fraction)

    source = model_source(recipe, device, on_train, stop, s.data_dir, started)
    net: list[nn.Module] = []
    calls = [0]  # cache misses

    def model() -> nn.Module:
        calls[0] += 1
        if not net:
            net.append(source().eval())
            if recipe.zoo is not None:  # loaded (downloaded): listed from now on, with what it outputs
                remember_zoo(*recipe.zoo, output_kind=getattr(net[0], "output_kind", None))
        return net[0]

    computed = []
    for i, u in enumerate(units):
        if stop():
            raise Cancelled("precompute cancelled; finished units stay in the cache.")
        label = labels[i] if labels is not None else u.describe()
        say(label, 0.0)

        def on_batch(b: int, n: int, label: str = label) -> None:
            say(label, b / n)

        before = calls[0]
        if u.kind == "evidence":
            plans.ensure(model, recipe, data, ev, device, cancel=stop, data_dir=s.data_dir,
                         progress=lambda what, f, label=label: say(f"{label} ({what.partition(': ')[2]})", f))
        elif u.chunks == 1:
            cache.get_grid(model, u.key, data, attack, [u.eps], device, on_batch=on_batch, data_dir=s.data_dir)
        else:
            attack_chunk(model(), u, x, y, attack, batch, on_batch, data, device)
            siblings = [v for v in plan([recipe], [u.eps], len(x), batch, s.chunk_images)]
            join(siblings, data, attack, y.cpu())
        computed.append(calls[0] > before)
        say(label, 1.0)
    return computed


def precompute(dataset: str, recipes: Sequence[Recipe], eps: Sequence[float] | None = None, norm: str = "linf",
               steps: int | None = None, device: str | torch.device = "cpu", data_dir: str | None = None,
               progress: Progress | None = None, cancel: Callable[[], bool] | None = None,
               chunk_images: int = CHUNK_IMAGES, evidence: bool = False, reliable: str = "fast",
               reliable_eps: Sequence[float] | None = None) -> Outcome:
    """Train what is missing and compute every unit not yet in the cache, in this process; see the module docstring.

    `evidence`: also each model's evidence plan (AutoAttack `reliable`, "fast" or "standard", at the
    findings' epsilon and `reliable_eps`; the masking check's attacks), one unit per model after its
    PGD units. `cancel` is polled before every unit and every training batch (and between AutoAttack's
    batches): returning True (or raising) stops the run with Cancelled; finished units stay in the cache.
    `core.study.fanout.run` does the same work on an executor (Ray: many processes or machines).
    """
    s = setting(dataset, eps, norm, steps, data_dir, evidence, reliable, reliable_eps, chunk_images)
    ev = s.plan_evidence()
    units = units_of(s, recipes, device)
    by_key = {r.key: r for r in recipes}
    out = Outcome(s.data, s.attack, s.grid, [r.name for r in recipes], evidence=ev)
    stop = cancel or (lambda: False)
    todo = [u for u in units if not unit_done(s, by_key[u.key], u, ev)]  # for the progress labels: "unit 3/40"

    def on_start(t: Recipe) -> None:
        if t.name not in out.trained:
            out.trained.append(t.name)

    for r in recipes:
        mine = [u for u in units if u.key == r.key]
        pending = [u for u in mine if u in todo]
        out.skipped += [u for u in mine if u not in pending]
        if not pending:
            if r.zoo is not None:
                remember_zoo(*r.zoo)  # the app's model picker lists evaluated zoo models
            continue
        if stop():
            raise Cancelled("precompute cancelled; finished units stay in the cache.")
        labels = [f"unit {todo.index(u) + 1}/{len(todo)}: {u.describe()}" for u in pending]
        done = evaluate(s, r, pending, device, progress, stop, on_start, labels)
        for u, now in zip(pending, done):
            (out.computed if now else out.skipped).append(u)
    return out
