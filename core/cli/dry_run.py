"""`python -m core precompute ... --dry-run [--gpus N]`: the plan and its estimated cost, without running it.

Prints the models (family, GFLOPs per image, units, GPU-hours), the totals for the evaluation split and
the whole test split, the wall time on --gpus GPUs (and on 1, 8 and 32), the checkpoints' download size
and the assumptions (`core.study.zoo_cost`). Downloads nothing, writes nothing.
"""

from __future__ import annotations

import argparse

from core.config import with_clean
from core.engine.logits import eval_batch_size
from core.engine.zoo import INPUT_SHAPES, LOGITSCOPE_DATASETS, list_zoo
from core.errors import LogitscopeError
from core.study import zoo_cost
from core.study.evidence import evidence as evidence_plan
from core.study.hyper import eps_grid, eval_attack, eval_data
from core.study.precompute import select_models

COMPARE_GPUS = (1, 8, 32)


def _zoo_names(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    names = list(args.zoo or [])
    if names and [n.lower() for n in names] != ["all"]:
        return names
    if not names:
        return []
    zoo_ds = [z for z, ours in LOGITSCOPE_DATASETS.items() if ours == args.dataset]
    if not zoo_ds:
        parser.error(f"--zoo all: RobustBench has no models for {args.dataset}; zoo models are evaluated on "
                     f"{', '.join(LOGITSCOPE_DATASETS.values())} (use --dataset cifar10)")
    try:
        return [e.name for e in list_zoo(zoo_ds[0], args.threat)]
    except LogitscopeError as exc:
        parser.error(f"--threat: {exc}")


def _table(est: zoo_cost.Estimate) -> list[str]:
    rows = [f"{'model':48s} {'family':34s} {'GFLOPs/img':>10s} {'units':>6s} {'GPU-h':>7s}"]
    for m in sorted(est.models, key=lambda m: -est.model_hours(m.name)):
        gf = "?" if m.gflops is None else f"{m.gflops:.2f}" + ("" if m.source.startswith("measured") else "*")
        rows.append(f"{m.name[:48]:48s} {m.family[:34]:34s} {gf:>10s} {est.model_units(m.name):6d} "
                    f"{est.model_hours(m.name):7.2f}")
    return rows


def _families(est: zoo_cost.Estimate) -> list[str]:
    rows = [f"{'family':48s} {'models':>6s} {'GFLOPs/img':>10s} {'units':>6s} {'GPU-h':>7s}"]
    for f in est.families():
        gf = "?" if f.gflops is None else f"{f.gflops:.2f}"
        rows.append(f"{f.family[:48]:48s} {f.models:6d} {gf:>10s} {f.units:6d} {f.gpu_hours:7.2f}")
    return rows


def _summary(label: str, est: zoo_cost.Estimate, gpus: int) -> list[str]:
    counts = sorted({*COMPARE_GPUS, gpus})
    walls = ", ".join(f"{g} GPU{'s' if g > 1 else ''} {zoo_cost.hours(est.wall_seconds(g))}" for g in counts)
    return [f"{label}: {len(est.units)} units, {est.total_flops / 1e15:,.0f} PFLOP, {est.gpu_hours:,.1f} GPU-hours; "
            f"wall time on {gpus} GPU{'s' if gpus > 1 else ''}: {zoo_cost.hours(est.wall_seconds(gpus))} "
            f"({walls})"]


def cmd_dry_run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Print what `precompute` would run and its estimated cost; downloads nothing. Returns the exit status."""
    gpus = getattr(args, "gpus", None)
    gpus = 1 if gpus is None else gpus
    if gpus < 1:
        parser.error(f"--gpus must be at least 1 (the GPUs the wall time is estimated for), got {gpus}")
    if args.dataset not in INPUT_SHAPES:
        parser.error(f"--dry-run estimates RobustBench zoo runs: --dataset {args.dataset} has no zoo models; use "
                     f"--dataset {', '.join(LOGITSCOPE_DATASETS.values())}")
    zoo = _zoo_names(args, parser)
    reliable = getattr(args, "reliable", None) or "fast"
    try:
        recipes = select_models(args.dataset, args.models, zoo, args.threat)
        grid = with_clean(args.eps) if args.eps else with_clean(eps_grid(args.dataset))  # L2: same count
        steps = eval_attack(args.dataset, args.norm, args.steps).steps
        ev = evidence_plan(args.dataset, args.norm, args.steps, reliable, grid=with_clean(eps_grid(args.dataset)),
                           reliable_eps=getattr(args, "reliable_eps", None)) if args.evidence else None
    except LogitscopeError as exc:
        parser.error(str(exc))
    data = eval_data(args.dataset)
    full = zoo_cost.TEST_IMAGES[args.dataset]
    n_eval = min(data.limit or full, full)
    batch = eval_batch_size(INPUT_SHAPES[args.dataset], "cuda")  # the batch (hence chunks) precompute uses on a GPU
    ests = {n: zoo_cost.estimate(recipes, grid, n, batch, steps, args.dataset, ev, reliable) for n in dict.fromkeys((n_eval, full))}
    est = ests[n_eval]
    executor = getattr(args, "executor", None) or "local"
    print(f"dry run: {args.dataset}, {len(recipes)} models ({len(zoo)} from the RobustBench zoo, {args.threat}), "
          f"{len(grid)} epsilons ({args.norm} PGD-{steps}, 0 = clean){', with evidence (AutoAttack ' + reliable + ')' if ev else ''}; "
          f"executor {executor}. Nothing is downloaded or computed.\n")
    print(f"Per model, on the evaluation split ({n_eval:,} test images); * = family assumption, see below:")
    print("\n".join(_table(est)))
    print("\nPer architecture family:")
    print("\n".join(_families(est)))
    print("\nTotals:")
    for n, e in ests.items():
        label = f"{n:,} images" + (" (the evaluation split)" if n == n_eval else " (the whole test split)")
        print("\n".join(_summary(label, e, gpus)))
    print(f"checkpoints to download: {est.download_bytes / 1e9:.1f} GB "
          f"({zoo_cost.hours(est.download_bytes / zoo_cost.DOWNLOAD_BYTES_S)} at "
          f"{zoo_cost.DOWNLOAD_BYTES_S / 1e6:g} MB/s, included in the wall times)")
    if est.unknown:
        print(f"cost unknown (counted as 0): {', '.join(est.unknown)}")
    print("\nAssumptions:")
    print("\n".join(f"- {line}" for line in zoo_cost.assumptions(est)))
    return 0
