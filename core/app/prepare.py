"""Getting models and their logits ready: what is missing, and the job that trains and evaluates it.

The app never trains or attacks inside a page run. It asks `missing(...)` (a few file checks), and
when something is missing it submits `prepare(...)` to the background job runner (core.app.jobs),
keyed by what it computes so that every session waiting for the same models shares one job.

Two notions of ready: `missing` is about the PGD grid the pages scrub (distributions, differences,
...); `evidence_missing` is about the evidence plan (`core.study.evidence`: AutoAttack at the
findings' eps and the gradient-masking check), which only the overview's numbers and badges need. A
prepare job given a plan computes it after every model's PGD grid, so no page waits for AutoAttack, and
in the order that states the findings soonest (`evidence_order`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from core.app import prepare_workers
from core.app.jobs import JobContext, format_seconds
from core.config import AttackSpec, DataSpec, cache_dir, stable_key
from core.engine.logits import entry_ok, get_grid
from core.engine.train import TrainProgress
from core.study import evidence
from core.study.evidence import Evidence
from core.study.findings import FINDING_MODELS, ROBUST_MODELS
from core.study.recipes import Recipe, is_trained, model_source

EVIDENCE_COST = 10.0  # a model's evidence in units of one PGD-20 grid: AutoAttack at one eps took ~16 s on the
                      # digits models (one core), PGD-20 over the grid ~1.5 s
EVIDENCE_SHARES = (0.0, 0.75, 0.05, 0.2)  # of that cost, per entry of Evidence.entries(): the PGD grid (computed
                                          # before), AutoAttack, margin-loss PGD, unbounded PGD-50


@dataclass(frozen=True)
class Need:
    """One thing a view waits for: a model to train, or its logits to compute under an attack."""

    recipe: Recipe
    what: str  # "train", "logits" (the PGD grid) or "evidence" (AutoAttack and the masking check)

    def describe(self) -> str:
        if self.what == "train":
            return f"training {self.recipe.name}"
        if self.what == "evidence":
            return f"AutoAttack and the gradient-masking check of {self.recipe.name}"
        return f"attacking {self.recipe.name} (logits over the epsilon grid)"


def logits_cached(recipe: Recipe, data: DataSpec, attack: AttackSpec, grid: Sequence[float]) -> bool:
    """True if the logits of `recipe` at every eps of the grid are in the cache and valid.

    Each file is checked (format, checksum, specs) once per version, then only stat-ed: a corrupt
    entry counts as missing, so the page waits for the background job that recomputes it.
    """
    return all(entry_ok(recipe.key, data, None if float(e) == 0 else attack.at(float(e))) for e in grid)


def missing(recipes: Sequence[Recipe], data: DataSpec, attack: AttackSpec, grid: Sequence[float]) -> list[Need]:
    """What must be trained or computed before these models' logits can be read over the grid.

    Cached logits need nothing, even without their checkpoint (a bundle may leave big ones out).
    """
    out: list[Need] = []
    for r in recipes:
        if logits_cached(r, data, attack, grid):
            continue
        out.append(Need(r, "logits" if is_trained(r) else "train"))
    return out


def evidence_missing(recipes: Sequence[Recipe], data: DataSpec, ev: Evidence) -> list[Need]:
    """The models whose evidence plan is not all cached: to train first, or to evaluate (a few file checks)."""
    return [Need(r, "evidence" if is_trained(r) else "train") for r in recipes
            if not evidence.is_complete(r, data, ev)]


def evidence_key(ev: Evidence) -> str:
    """The identity of an evidence plan: every attack of it and its epsilons."""
    return stable_key({"dataset": ev.dataset, "entries": [(a.key(), [float(e) for e in eps]) for a, eps in
                                                          ev.entries()]})


def job_key(recipes: Sequence[Recipe], data: DataSpec, attack: AttackSpec, grid: Sequence[float],
            ev: Evidence | None = None, checked: Sequence[Recipe] | None = None) -> str:
    """The job's identity: the models, the data, the attack, the grid, the evidence plan (and the models it
    checks) and the cache folder."""
    ident = {"models": sorted(r.key for r in recipes), "data": data.key(), "attack": attack.key(),
             "grid": sorted(float(e) for e in grid), "cache": str(cache_dir())}
    if ev is not None:
        ident["evidence"] = [evidence_key(ev), sorted(r.key for r in (recipes if checked is None else checked))]
    return f"prepare:{stable_key(ident)}"


def training_cost(recipe: Recipe) -> float:
    """Relative cost of training a recipe: forward/backward passes per batch (PGD-AT with 5 steps: 6)."""
    t = recipe.spec.train
    if t.method in ("pgd", "trades") and t.attack is not None:
        return 1.0 + t.attack.steps + (1.0 if t.method == "trades" else 0.0)
    if t.method == "fgsm":
        return 2.0
    return 1.0


def _untrained(recipes: Sequence[Recipe]) -> dict[str, Recipe]:
    """Every untrained recipe, teachers included, by key."""
    out: dict[str, Recipe] = {}
    for r in recipes:
        while r is not None:
            if r.key not in out and not is_trained(r):
                out[r.key] = r
            r = r.teacher
    return out


Entries = list[tuple[AttackSpec, tuple[float, ...]]]


def evidence_order(recipes: Sequence[Recipe], ev: Evidence) -> list[tuple[Recipe, Entries]]:
    """The evidence of `recipes` as (model, entries of `ev.entries()`) steps, each entry of each model once, in
    the order that states the findings soonest: the reliable attack on the models whose robust accuracy the
    findings read (`ROBUST_MODELS`, 3a's two first), then the rest of every model's plan, the findings'
    models (`FINDING_MODELS`) before the others. Otherwise `recipes`' order."""
    reliable = (ev.reliable, ev.reliable_eps)
    first = sorted((r for r in recipes if r.name in ROBUST_MODELS), key=lambda r: ROBUST_MODELS.index(r.name))
    done = {r.key for r in first}
    rest = sorted(recipes, key=lambda r: r.name not in FINDING_MODELS)
    return [(r, [reliable]) for r in first] + [(r, [e for e in ev.entries() if r.key not in done or e != reliable])
                                               for r in rest]


def _stages(r: Recipe, ev: Evidence, entries: Entries | None = None) -> dict[str, tuple[str, float, float]]:
    """`evidence.ensure`'s progress labels -> (what to show, start share, share) of the model's evidence cost, for
    `entries` (default: the whole plan) computed in that order."""
    reliable = ", ".join(f"{e:g}" for e in ev.reliable_eps if e > 0)
    texts = (f"PGD-{ev.pgd.steps} ({ev.pgd.norm}) on {r.name} over {len(ev.grid)} epsilons",
             f"{ev.reliable.describe()} on {r.name} at eps {reliable}",
             f"gradient-masking check of {r.name}: {ev.margin.at(ev.eps).describe()}",
             f"gradient-masking check of {r.name}: unbounded {ev.unbounded.describe()}")
    plan = ev.entries()
    out, start = {}, 0.0
    for entry, text, share in zip(plan, texts, EVIDENCE_SHARES):
        if entries is None or entry in entries:
            out[f"{r.name}: {entry[0].describe()}"] = (text, start, share)
            start += share
    return out


def findings_first(grids: list, checks: list, n_first: int) -> list:
    """The worker units in the order that states the findings soonest: the grids up to the last of the findings'
    models (the callers put those first), the first `n_first` evidence steps (`evidence_order` puts AutoAttack
    on the findings' students there), then the other grids, then the rest of the evidence. A free worker takes
    the first unit whose dependencies are done (`prepare_workers.dependencies`: a student's grid waits for its
    teacher's)."""
    last = max((i for i, u in enumerate(grids) if u.name in FINDING_MODELS), default=-1)
    return grids[:last + 1] + checks[:n_first] + grids[last + 1:] + checks[n_first:]


def prepare(ctx: JobContext, recipes: Sequence[Recipe], data: DataSpec, attack: AttackSpec,
            grid: Sequence[float], device: str | torch.device = "cpu", data_dir: str | None = None,
            ev: Evidence | None = None, checked: Sequence[Recipe] | None = None) -> None:
    """Train every missing model (teachers first) and compute its logits over the grid; then, given an
    evidence plan `ev`, compute its entries (`evidence.ensure`) for `checked` (default: `recipes`).

    Progress is measured in units of work: a model's training cost (`training_cost`), one unit per model
    to attack and EVIDENCE_COST per model to check, so the bar and its time estimate move at the speed
    of the work. Every PGD grid comes before any AutoAttack: pages waiting for PGD logits wait for no
    AutoAttack; the evidence then comes in `evidence_order` (AutoAttack on the findings' students first).
    On a CPU with several cores the units run in worker processes (`core.app.prepare_workers`), where
    AutoAttack on the findings' students comes right after the findings' models' grids (`findings_first`).
    Cancelling stops within one batch; finished models and entries stay in the cache.
    """
    untrained = _untrained(recipes)
    n_train = len(untrained)
    to_attack = [r for r in recipes if not logits_cached(r, data, attack, grid)]
    to_check = [] if ev is None else [r for r in (recipes if checked is None else checked)
                                      if not evidence.is_complete(r, data, ev)]
    total = (sum(training_cost(r) for r in untrained.values()) + 1.0 * len(to_attack)
             + EVIDENCE_COST * len(to_check)) or 1.0
    done = {"units": 0.0, "trained": 0}
    current = {"name": "", "cost": 1.0}

    def on_start(r: Recipe) -> None:
        current["name"], current["cost"] = r.name, training_cost(r)
        ctx.report(f"training {r.name} (model {done['trained'] + 1} of {n_train})", done["units"] / total)

    def on_train(p: TrainProgress) -> None:
        frac = (done["units"] + current["cost"] * p.fraction) / total
        ctx.report(f"training {current['name']} (model {done['trained'] + 1} of {n_train}): epoch {p.epoch}/"
                   f"{p.epochs}, {format_seconds(p.elapsed)} elapsed, about {format_seconds(p.eta)} left for "
                   "this model", frac)
        if p.epoch == p.epochs and p.batch == p.batches:
            done["units"] += current["cost"]
            done["trained"] += 1

    steps = evidence_order(to_check, ev) if ev is not None else []
    workers = prepare_workers.app_workers(device, len(to_attack) + len(steps))
    if workers > 1 and torch.device(device).type == "cpu":  # every unit in worker processes, one thread each
        for r in recipes:  # untrained models whose PGD logits are cached (not units below): train them here
            if r not in to_attack:
                model_source(r, device, on_train, lambda: ctx.cancelled, data_dir, on_start)
        grids = [prepare_workers.Unit("grid", (r, data, attack, tuple(grid), str(device), data_dir),
                                      cost + 1.0, r.name, cost / (cost + 1.0))
                 for r in to_attack for cost in [training_cost(r) if r.key in untrained else 0.0]]
        checks = [prepare_workers.Unit("evidence", (r, e, data, ev, str(device), data_dir),
                                       EVIDENCE_COST * sum(x for _, _, x in _stages(r, ev, e).values()), r.name)
                  for r, e in steps]
        units = findings_first(grids, checks, sum(r.name in ROBUST_MODELS for r in to_check))
        prepare_workers.run(ctx, units, total, workers)
        return
    sources = {}
    for r in recipes:
        sources[r.key] = source = model_source(r, device, on_train, lambda: ctx.cancelled, data_dir, on_start)
        if r not in to_attack:
            continue
        base = done["units"]

        def on_batch(b: int, n: int, r=r, base=base) -> None:
            ctx.report(f"attacking {r.name}: PGD-{attack.steps} ({attack.norm}) over {len(grid)} epsilons, "
                       f"batch {b}/{n}", (base + b / n) / total)

        ctx.report(f"attacking {r.name}: PGD-{attack.steps} ({attack.norm}) over {len(grid)} epsilons",
                   base / total)
        get_grid(source, r.key, data, attack, grid, device, on_batch=on_batch, data_dir=data_dir,
                 cancel=lambda: ctx.cancelled)
        done["units"] = base + 1.0

    for i, (r, entries) in enumerate(steps, 1):
        base, stages = done["units"], _stages(r, ev, entries)

        def say(label: str, fraction: float, i=i, base=base, stages=stages) -> None:
            text, start, share = stages.get(label, (label, 0.0, 0.0))
            ctx.report(f"evidence, step {i} of {len(steps)}: {text}",
                       (base + EVIDENCE_COST * (start + share * fraction)) / total)

        source = sources.get(r.key) or model_source(r, device, on_train, lambda: ctx.cancelled, data_dir, on_start)
        evidence.ensure(source, r, data, ev, device, progress=say, cancel=lambda: ctx.cancelled, data_dir=data_dir,
                        entries=entries)
        done["units"] = base + EVIDENCE_COST * sum(share for _, _, share in stages.values())
