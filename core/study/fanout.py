"""A precompute (or a sweep) as tasks on an executor: train each missing model, then evaluate it.

The tasks, in dependency order:
- train one local model that is not trained yet (after its teacher's task, for a student);
- evaluate one model at every pending epsilon of the grid (one task per model), or at one epsilon on
  one chunk of a big split (one task per chunk), after its training task;
- with `evidence`, the model's evidence plan (AutoAttack and the masking check's attacks), after its
  training task.
Each task is `core.study.precompute.evaluate` or `ensure_model` on a slice of the plan, so the cache
entries are the ones `precompute` writes in this process. Chunks that came back from machines without a
shared filesystem are joined here, by the driver, once they are all in.

Example:
    >>> out = run(LocalExecutor(), "digits", sweep_recipes(grid), evidence=True)
    >>> len(out.computed), out.trained
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from core.config import cache_dir
from core.engine import logits as cache
from core.engine.data import load_dataset
from core.study.executors import Executor, Task
from core.study.precompute import Outcome, Progress, Setting, evaluate, setting, unit_done, units_of
from core.study.recipes import Recipe, checkpoint_path, ensure_model, is_trained, remember_zoo
from core.study.units import Unit, join, plan


def train_task(recipe: Recipe, device: str, data_dir: str | None, report: Progress) -> bool:
    """Train the recipe unless its checkpoint is in the cache; True if it trained now."""
    if is_trained(recipe):
        return False
    ensure_model(recipe, device, lambda p: report(f"training {recipe.name}", p.fraction), data_dir=data_dir)
    return True


def _checkpoint(recipe: Recipe) -> tuple[str, ...]:
    if recipe.zoo is not None:
        return ()
    return (checkpoint_path(recipe).relative_to(cache_dir()).as_posix(),)


def tasks(s: Setting, recipes: Sequence[Recipe], units: Sequence[Unit], pending: set[Unit],
          device: str) -> tuple[list[Task], list[tuple[Recipe, tuple[Unit, ...]] | Recipe]]:
    """The task list and, for each task, what it stands for: (recipe, units) for an evaluation, the recipe for training."""
    gpu = torch.device(device).type == "cuda"
    out: list[Task] = []
    what: list = []
    trains: dict[str, int] = {}  # model key -> its training task

    def train(r: Recipe) -> int | None:
        if r.zoo is not None or is_trained(r):
            return None
        if r.key not in trains:
            before = train(r.teacher) if r.teacher is not None else None
            needs = _checkpoint(r.teacher) if r.teacher is not None else ()
            out.append(Task(f"train {r.name}", train_task, (r, device, s.data_dir),
                            () if before is None else (before,), needs, gpu))
            what.append(r)
            trains[r.key] = len(out) - 1
        return trains[r.key]

    for r in recipes:
        mine = [u for u in units if u.key == r.key and u in pending]
        if not mine:
            continue
        before = train(r)
        after = () if before is None else (before,)
        whole = tuple(u for u in mine if u.kind == "pgd" and u.chunks == 1)
        groups = ([whole] if whole else []) + [(u,) for u in mine if u.kind != "pgd" or u.chunks > 1]
        for group in groups:
            label = "evaluate " + (group[0].describe() if len(group) == 1
                                   else f"{r.name} at eps {', '.join(f'{u.eps:g}' for u in group)}")
            out.append(Task(label, evaluate, (s, r, group, device), after, _checkpoint(r), gpu))
            what.append((r, group))
    return out, what


def _overall(labels: Sequence[str], say: Progress) -> Callable[[int, str, float], None]:
    """Tasks' (index, what, fraction) -> one bar: "tasks | 3/12 done: evaluate pgd-at-eps0.1-s0 (eps 0.1)"."""
    done = [0.0] * len(labels)

    def on_task(index: int, what: str, fraction: float) -> None:
        done[index] = max(done[index], min(max(fraction, 0.0), 1.0) if what != "done" else 1.0)
        finished = sum(d >= 1.0 for d in done)
        now = labels[index] if what == "done" else what  # a task's own reports name their model
        say(f"tasks | {finished}/{len(labels)} tasks done; {now}", sum(done) / max(1, len(labels)))

    return on_task


def run(executor: Executor, dataset: str, recipes: Sequence[Recipe], eps: Sequence[float] | None = None,
        norm: str = "linf", steps: int | None = None, device: str = "cpu", data_dir: str | None = None,
        progress: Progress | None = None, cancel: Callable[[], bool] | None = None,
        evidence: bool = False, reliable: str = "fast", reliable_eps: Sequence[float] | None = None,
        chunk_images: int | None = None) -> Outcome:
    """Train what is missing and compute every unit not yet in the cache, on `executor`; see the module docstring.

    Interrupting (Ctrl-C, or `cancel` returning True) makes the executor cancel the outstanding tasks and
    raise (KeyboardInterrupt or Cancelled); what finished is in the cache, and a re-run resumes.
    """
    kw = {} if chunk_images is None else {"chunk_images": chunk_images}
    s = setting(dataset, eps, norm, steps, data_dir, evidence, reliable, reliable_eps, **kw)
    ev = s.plan_evidence()
    units = units_of(s, recipes, device)
    by_key = {r.key: r for r in recipes}
    pending = {u for u in units if not unit_done(s, by_key[u.key], u, ev)}
    out = Outcome(s.data, s.attack, s.grid, [r.name for r in recipes], evidence=ev)
    out.skipped = [u for u in units if u not in pending]
    todo, what = tasks(s, recipes, units, pending, str(device))
    say = progress or (lambda label, fraction: None)
    results = executor.run(todo, _overall([t.label for t in todo], say), cancel) if todo else []
    for w, result in zip(what, results):
        if isinstance(w, Recipe):
            if result:
                out.trained.append(w.name)
            continue
        for u, now in zip(w[1], result):
            (out.computed if now else out.skipped).append(u)
    _join_chunks(s, recipes, units, device)
    for r in recipes:
        if r.zoo is not None:
            remember_zoo(*r.zoo)  # the app's model picker lists evaluated zoo models
    return out


def _join_chunks(s: Setting, recipes: Sequence[Recipe], units: Sequence[Unit], device: str) -> None:
    """Join chunked entries whose parts are all in (workers without a shared filesystem cannot join them)."""
    chunked = {(u.key, u.eps) for u in units if u.kind == "pgd" and u.chunks > 1}
    if not chunked:
        return
    x, y = load_dataset(s.dataset, s.data_dir).split(s.data)
    batch = cache.eval_batch_size(x.shape[1:], device)
    for r in recipes:
        for e in sorted({e for k, e in chunked if k == r.key}):
            siblings = plan([r], [e], len(x), batch, s.chunk_images)
            if not cache.entry_ok(r.key, s.data, None if e == 0 else s.attack.at(e)):
                join(siblings, s.data, s.attack, y.cpu())
