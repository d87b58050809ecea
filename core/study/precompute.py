"""`python -m core precompute`: logits of chosen models over an epsilon grid, resumable after an interruption.

The work is cut into units, and each unit lands in the cache as soon as it finishes:
- training a missing local model (its checkpoint, through `core.study.ensure_model`);
- one model at one epsilon on the evaluation split (one entry of `core.engine.logits`);
- on big splits (more than `CHUNK_IMAGES` images), one model at one epsilon on one chunk of images,
  kept under cache/precompute/parts/ until the entry's last chunk is done and the chunks are joined.
- with `evidence=True`, one model's evidence plan (`core.study.evidence`: AutoAttack at the findings'
  epsilon, margin-loss and unbounded PGD, and the default PGD grid the masking check reads), computed
  by `evidence.ensure` entry by entry on the whole split.
A re-run plans the same units and skips those whose files exist and pass their checks (a corrupt or
truncated entry or part counts as missing and is computed again), so an interruption (Ctrl-C, a lost
machine) costs at most the unit in progress. Chunks start at multiples of the attack batch size and
seed their random starts by absolute image index (`attack_grid(first_index=...)`), so a joined entry
is exactly what `core.engine.logits.get_grid` computes in one pass, and what the app's pages recompute.
Chunks are for PGD only: AutoAttack attacks the survivors epsilon by epsilon and seeds each run per
batch, so a chunk of it would not be a piece of the whole-split entry; its entries are never chunked.

Example:
    >>> recipes = select_models("cifar10", "standard,pgd-at", zoo=["Wong2020Fast"])
    >>> out = precompute("cifar10", recipes, device="cuda", progress=lambda what, f: print(what, f))
    >>> len(out.computed), len(out.skipped)
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from core.config import AttackSpec, DataSpec, cache_dir, check_eps, with_clean
from core.engine import logits as cache
from core.engine.attacks import attack_grid
from core.engine.data import load_dataset
from core.engine.train import TrainProgress
from core.engine.zoo import LOGITSCOPE_DATASETS, find_entry
from core.errors import Cancelled, LogitscopeError
from core.storage import atomic_write, verified
from core.study import evidence as plans
from core.study.evidence import Evidence
from core.study.hyper import eps_grid, eval_attack, eval_data
from core.study.recipes import Recipe, default_recipes, fast_at_recipe, model_source, remember_zoo, zoo_recipe

CHUNK_IMAGES = 1024  # images per unit on big splits: a few minutes of PGD-20 for a WideResNet on a CPU
Progress = Callable[[str, float], None]  # (what runs now, fraction of it done)


def local_recipes(dataset: str) -> dict[str, Recipe]:
    """Local recipes by name: the default study plus fast AT."""
    out = {r.name: r for r in default_recipes(dataset)}
    fast = fast_at_recipe(dataset)
    out[fast.name] = fast
    return out


def select_models(dataset: str, names: str | Sequence[str] = "all", zoo: Sequence[str] = (),
                  threat: str = "Linf") -> list[Recipe]:
    """Recipes for local model names ("all": the default study; "" or "none": no local model) and zoo names."""
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
        for name in zoo:
            entry = find_entry(name, zoo_ds[0], threat)  # a clear error, with close names, for a typo
            chosen.append(zoo_recipe(entry.name, entry.dataset, entry.threat))
    if not chosen:
        raise LogitscopeError("No models chosen: give --models (e.g. all) or --zoo NAME.")
    return list({r.key: r for r in chosen}.values())


@dataclass(frozen=True)
class Unit:
    """One model at one epsilon on images [start, stop) of the split; `chunks` units make its entry."""

    model: str
    key: str
    eps: float
    start: int
    stop: int
    chunks: int
    part: int = 0  # which chunk, 0-based
    kind: str = "pgd"  # "pgd": one entry (or chunk) of the PGD grid; "evidence": the model's evidence plan

    def describe(self) -> str:
        if self.kind == "evidence":
            return f"{self.model}: AutoAttack at eps {self.eps:g} and the masking check's attacks"
        where = "" if self.chunks == 1 else f", chunk {self.part + 1}/{self.chunks}"
        return f"{self.model} at eps {self.eps:g}{where}"


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


def _entry_attack(attack: AttackSpec, eps: float) -> AttackSpec | None:
    return None if eps == 0 else attack.at(eps)


def plan(recipes: Sequence[Recipe], grid: Sequence[float], n_images: int, batch_size: int,
         chunk_images: int = CHUNK_IMAGES) -> list[Unit]:
    """Every unit, model by model, epsilon by epsilon; chunks are whole attack batches."""
    chunk = max(batch_size, -(-chunk_images // batch_size) * batch_size)  # rounded up to whole batches
    bounds = [(0, n_images)] if n_images <= chunk else [(s, min(s + chunk, n_images))
                                                        for s in range(0, n_images, chunk)]
    return [Unit(r.name, r.key, float(e), s, t, len(bounds), i) for r in recipes for e in grid
            for i, (s, t) in enumerate(bounds)]


def part_path(unit: Unit, data: DataSpec, attack: AttackSpec) -> Path:
    """Where a finished chunk waits for its siblings."""
    a = _entry_attack(attack, unit.eps)
    name = f"{data.key()}-{'clean' if a is None else a.key()}"
    return cache_dir() / "precompute" / "parts" / unit.key / name / f"{unit.start}-{unit.stop}.safetensors"


def _check_part(path: Path, rows: int) -> None:
    """Raise unless the part loads as safetensors holding 'logits' (rows, K) and nothing else."""
    tensors = load_file(path)
    if set(tensors) != {"logits"} or tensors["logits"].ndim != 2 or tensors["logits"].shape[0] != rows:
        raise ValueError(f"it holds {({n: tuple(t.shape) for n, t in tensors.items()})}, "
                         f"not logits of its {rows} images")


def part_ok(unit: Unit, data: DataSpec, attack: AttackSpec) -> bool:
    """The chunk's part is on disk and intact (checked once per version of the file, then a stat)."""
    return verified(part_path(unit, data, attack), lambda p: _check_part(p, unit.stop - unit.start))


def is_done(unit: Unit, data: DataSpec, attack: AttackSpec) -> bool:
    """The unit's result is in the cache and passes its check: its entry, or (for a chunk) its part.

    A corrupt or truncated entry or part counts as missing (reported once), so it is computed again.
    """
    if cache.entry_ok(unit.key, data, _entry_attack(attack, unit.eps)):
        return True
    return unit.chunks > 1 and part_ok(unit, data, attack)


def _save_part(path: Path, logits: torch.Tensor) -> None:
    atomic_write(path, save({"logits": logits.contiguous()}))


def _join(units: list[Unit], data: DataSpec, attack: AttackSpec, labels: torch.Tensor) -> bool:
    """Join the chunks of one (model, eps) into its cache entry once all are there; True if it did."""
    units = sorted(units, key=lambda u: u.start)
    if not all(part_ok(u, data, attack) for u in units):  # a broken part is computed again, then joined
        return False
    paths = [part_path(u, data, attack) for u in units]
    try:
        parts = [load_file(p)["logits"] for p in paths]
    except (SafetensorError, OSError, KeyError):  # a part broken by a crash mid-write: recompute it next run
        for p in paths:
            p.unlink(missing_ok=True)
        return False
    u = units[0]
    cache.put(u.key, data, _entry_attack(attack, u.eps), torch.cat(parts), labels)
    shutil.rmtree(paths[0].parent, ignore_errors=True)
    for folder in paths[0].parents[1:4]:  # <key>/, parts/, precompute/: removed when nothing else waits there
        try:
            folder.rmdir()
        except OSError:
            break
    return True


def _chunk(model: nn.Module, u: Unit, x: torch.Tensor, y: torch.Tensor, attack: AttackSpec, batch: int,
           on_batch: Callable[[int, int], None], data: DataSpec, device: str | torch.device) -> None:
    """Attack one chunk of images with PGD and keep it as a part (AutoAttack is refused: see the module docstring)."""
    if attack.reliable:
        raise LogitscopeError(f"{attack.describe()} cannot be computed chunk by chunk: it attacks the survivors "
                              "epsilon by epsilon and seeds each run per batch, so a chunk would not be a piece of "
                              "its whole-split entry. Compute it with evidence=True (`--evidence`), which runs it on "
                              "the whole split.")
    computed = attack_grid(model, x[u.start:u.stop].to(device), y[u.start:u.stop].to(device), attack,
                           [u.eps], batch_size=batch, on_batch=on_batch, first_index=u.start)
    _save_part(part_path(u, data, attack), computed[u.eps])


def precompute(dataset: str, recipes: Sequence[Recipe], eps: Sequence[float] | None = None, norm: str = "linf",
               steps: int | None = None, device: str | torch.device = "cpu", data_dir: str | None = None,
               progress: Progress | None = None, cancel: Callable[[], bool] | None = None,
               chunk_images: int = CHUNK_IMAGES, evidence: bool = False, reliable: str = "fast",
               reliable_eps: Sequence[float] | None = None) -> Outcome:
    """Train what is missing and compute every unit not yet in the cache; see the module docstring.

    `evidence`: also each model's evidence plan (AutoAttack `reliable`, "fast" or "standard", at the
    findings' epsilon and `reliable_eps`; the masking check's attacks), one unit per model after its
    PGD units. `cancel` is polled before every unit and every training batch (and between AutoAttack's
    batches): returning True (or raising) stops the run with Cancelled; finished units stay in the cache.
    """
    data, attack = eval_data(dataset), eval_attack(dataset, norm, steps)
    grid = with_clean(eps if eps is not None else eps_grid(dataset, norm, data_dir))
    for e in [*grid, *(reliable_eps or [])]:
        check_eps(e, norm)
    ev = plans.evidence(dataset, norm, steps, reliable, attack.seed, reliable_eps, data_dir) if evidence else None
    x, y = load_dataset(dataset, data_dir).split(data)
    batch = cache.eval_batch_size(x.shape[1:], device)
    units = plan(recipes, grid, len(x), batch, chunk_images)
    if ev is not None:  # after each model's PGD units (plan's order is model by model)
        units += [Unit(r.name, r.key, ev.eps, 0, len(x), 1, kind="evidence") for r in recipes]
        units.sort(key=lambda u: [r.key for r in recipes].index(u.key))
    by_key = {r.key: r for r in recipes}
    out = Outcome(data, attack, grid, [r.name for r in recipes], evidence=ev)
    report = progress or (lambda what, fraction: None)
    stop = cancel or (lambda: False)

    def done(u: Unit) -> bool:
        return plans.is_complete(by_key[u.key], data, ev) if u.kind == "evidence" else is_done(u, data, attack)

    todo = [u for u in units if not done(u)]  # for the progress labels: "unit 3/40"

    def check() -> None:
        if stop():
            raise Cancelled("precompute cancelled; finished units stay in the cache.")

    for r in recipes:
        mine = [u for u in units if u.key == r.key]
        pending = [u for u in mine if not done(u)]
        out.skipped += [u for u in mine if u not in pending]
        if not pending:
            if r.zoo is not None:
                remember_zoo(*r.zoo)  # the app's model picker lists evaluated zoo models
            continue
        check()

        training = {"name": r.name}  # a student's teacher trains first, under its own name

        def on_start(t: Recipe, training: dict = training) -> None:
            training["name"] = t.name
            if t.name not in out.trained:
                out.trained.append(t.name)

        def on_train(p: TrainProgress, training: dict = training) -> None:
            report(f"training {training['name']}", p.fraction)

        source = model_source(r, device, on_train, stop, data_dir, on_start)
        net: list[nn.Module] = []
        calls = [0]  # cache misses: a unit another process computed while this one waited needs none

        def model() -> nn.Module:
            calls[0] += 1
            if not net:
                net.append(source().eval())
                if r.zoo is not None:  # loaded (downloaded): listed from now on, with what it outputs
                    remember_zoo(*r.zoo, output_kind=getattr(net[0], "output_kind", None))
            return net[0]

        for u in pending:
            check()
            label = f"unit {todo.index(u) + 1}/{len(todo)}: {u.describe()}"
            report(label, 0.0)

            def on_batch(b: int, n: int, label: str = label) -> None:
                report(label, b / n)

            before = calls[0]
            if u.kind == "evidence":
                plans.ensure(model, r, data, ev, device, cancel=stop, data_dir=data_dir,
                             progress=lambda what, f, label=label: report(f"{label} ({what.partition(': ')[2]})", f))
            elif u.chunks == 1:
                cache.get_grid(model, u.key, data, attack, [u.eps], device, on_batch=on_batch, data_dir=data_dir)
            else:
                _chunk(model(), u, x, y, attack, batch, on_batch, data, device)
                _join([v for v in mine if v.eps == u.eps], data, attack, y.cpu())
            (out.computed if calls[0] > before else out.skipped).append(u)
            report(label, 1.0)
    return out
