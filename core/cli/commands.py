"""One function per subcommand: `cmd_<name>(args, parser) -> exit status`."""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial

from core.cli.args import check_dataset, check_eps_flags, output_file, progress_bar
from core.config import cache_dir
from core.engine.data import DATASETS, DESCRIPTIONS, SCHEME_DESCRIPTIONS
from core.errors import Cancelled, LogitscopeError
from core.storage import atomic_write


def cmd_reproduce(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from core.engine.models import ARCHS, resolve_device
    from core.study import report as rep
    from core.study.hyper import eval_attack
    from core.study.recipes import default_recipes

    if args.arch is not None and args.arch not in ARCHS:
        parser.error(f"unknown architecture {args.arch!r}: choose one of {', '.join(sorted(ARCHS))}")
    check_dataset(args, parser)
    try:
        check_eps_flags(args)
        attack = eval_attack(args.dataset, args.norm, args.steps)
        rep.plan(args.dataset, attack, args.eps, args.reliable, args.reliable_eps, args.data_dir)
    except LogitscopeError as exc:
        parser.error(str(exc))
    if args.json is not None:
        output_file(args.json, "--json", parser)
    try:
        device = resolve_device(args.device)
    except LogitscopeError as exc:
        parser.error(str(exc))
    recipes = partial(default_recipes, arch=args.arch) if args.arch else default_recipes
    result = rep.reproduce(args.dataset, range(args.seeds), args.eps, attack, device, args.data_dir,
                           progress=progress_bar(args.quiet), recipes=recipes, reliable=args.reliable,
                           reliable_eps=args.reliable_eps, workers=args.workers)
    print(rep.format_report(result))
    if args.json is not None:
        try:
            atomic_write(args.json, json.dumps(result, indent=2).encode())
        except LogitscopeError as exc:  # e.g. the disk filled up during the run
            reason = getattr(exc.__cause__, "strerror", None) or exc
            raise LogitscopeError(f"Cannot write the report to {args.json} ({reason}): free disk space or choose "
                                  "another --json path and run again (the models and logits come from the cache)."
                                  ) from exc
        print(f"\nReport written to {args.json}")
    return 0


def cmd_datasets(args, parser) -> int:
    for name in sorted(DATASETS):
        print(f"{name:15s} {DESCRIPTIONS[name]}")
    for prefix in sorted(SCHEME_DESCRIPTIONS):
        print(f"{prefix + ':<path>':15s} {SCHEME_DESCRIPTIONS[prefix]}")
    print("\nYour own data: --dataset npz:mine.npz or --dataset folder:mine/ (a relative path starts at --data-dir "
          "if given). Without a train/test split, 20% of each class is the test split (seed 0).\n"
          "mnist, fashion_mnist and cifar10 download into the cache once; offline, put torchvision's files in a "
          "folder and pass it as --data-dir.")
    return 0


def cmd_zoo(args, parser) -> int:
    from core.engine import zoo

    for value, choices, flag in ((args.dataset, zoo.ZOO_DATASETS, "--dataset"), (args.threat, zoo.ZOO_THREATS, "--threat")):
        if value is not None and value.lower() not in (c.lower() for c in choices):
            parser.error(f"{flag} {value!r} is not one of {', '.join(choices)}")
    entries = zoo.list_zoo(args.dataset, args.threat)
    for e in entries:
        notes = (["ensemble: may return probabilities"] if e.ensemble else []) + (["downloaded"] if e.downloaded() else [])
        print(f"{e.dataset:9s} {e.threat:15s} {e.name}" + (f"  [{'; '.join(notes)}]" if notes else ""))
    print(f"\n{len(entries)} models. Checkpoints download on first use into {zoo.model_dir()}.")
    return 0


def cmd_cache(args, parser) -> int:
    root = cache_dir()
    files = [f for f in root.rglob("*") if f.is_file()] if root.exists() else []
    size = sum(f.stat().st_size for f in files)
    print(f"cache: {root}\n{len(files)} files, {size / 1e6:.1f} MB\nDeleting this folder is always safe: "
          "everything in it is recomputed on demand.")
    return 0


def check_executor_flags(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Usage errors of --executor, --ray-address and --no-shared-fs, before any work."""
    from core.study.executors import address_parts

    if args.executor != "ray" and (args.ray_address is not None or args.no_shared_fs):
        parser.error("--ray-address and --no-shared-fs need --executor ray")
    if args.ray_address not in (None, "auto"):
        try:
            address_parts(args.ray_address)
        except LogitscopeError as exc:
            parser.error(str(exc))


def make_executor(args: argparse.Namespace):
    """The executor the flags ask for; Ray is imported only here, and only for --executor ray."""
    from core.study.executors import LocalExecutor

    if args.executor == "local":
        return LocalExecutor(args.threads)
    try:
        from core.study.executor_ray import RayExecutor
    except ImportError as exc:
        raise LogitscopeError(f"--executor ray needs Ray ({exc}): run pip install -r requirements.txt.") from exc
    return RayExecutor(args.ray_address, shared_fs=not args.no_shared_fs, threads=args.threads or 1)


def run_on_executor(args: argparse.Namespace, work) -> tuple[object, object]:
    """(work(executor), executor): the executor is closed afterwards; Ctrl-C is re-raised after it stops."""
    executor = make_executor(args)
    try:
        if hasattr(executor, "start") and not args.quiet:
            print(f"starting Ray{' at ' + args.ray_address if args.ray_address else ' on this machine'} ...",
                  file=sys.stderr)
        if hasattr(executor, "start"):
            executor.start()
        return work(executor), executor
    finally:
        if hasattr(executor, "close"):
            executor.close()


def report_retries(executor) -> None:
    for label, attempts in getattr(executor, "retried", {}).items():
        print(f"retried: {label} (its worker was lost; done on attempt {attempts})", file=sys.stderr)


def cmd_precompute(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from core.engine.models import resolve_device
    from core.study import fanout
    from core.study import precompute as pc

    check_dataset(args, parser)
    check_executor_flags(args, parser)
    if args.reliable_eps is not None and not args.evidence:
        parser.error("--reliable-eps needs --evidence (AutoAttack runs only as part of the evidence)")
    if args.dry_run:
        from core.cli.dry_run import cmd_dry_run

        return cmd_dry_run(args, parser)
    try:
        check_eps_flags(args)
        recipes = pc.select_models(args.dataset, args.models, args.zoo, args.threat)
    except LogitscopeError as exc:
        parser.error(str(exc))
    try:
        device = resolve_device(args.device)
    except LogitscopeError as exc:
        parser.error(str(exc))
    kw = dict(eps=args.eps, norm=args.norm, steps=args.steps, device=str(device), data_dir=args.data_dir,
              progress=progress_bar(args.quiet), evidence=args.evidence, reliable=args.reliable,
              reliable_eps=args.reliable_eps)
    executor = None
    try:
        if args.executor == "local" and args.threads is None:  # as before executors: this process, every core
            out = pc.precompute(args.dataset, recipes, **kw)
        else:
            out, executor = run_on_executor(args, lambda ex: fanout.run(ex, args.dataset, recipes, **kw))
    except (Cancelled, KeyboardInterrupt):
        print("\ninterrupted: every finished model and unit of logits is in the cache; run the same command again to "
              "resume where it stopped.", file=sys.stderr)
        return 130
    report_retries(executor)
    print(f"{args.dataset}: {len(out.models)} models x {len(out.grid)} epsilons ({out.attack.norm} PGD-"
          f"{out.attack.steps}, {out.data.split} split{'' if out.data.limit is None else f', first {out.data.limit}'})")
    if out.evidence is not None:
        eps = ", ".join(f"{e:g}" for e in out.evidence.reliable_eps if e > 0)
        print(f"evidence: {out.evidence.reliable.describe()} at eps {eps}, and the gradient-masking check's attacks")
    print(f"computed {len(out.computed)} units, {len(out.skipped)} already cached"
          + (f"; trained {', '.join(out.trained)}" if out.trained else "") + f". Cache: {cache_dir()}")
    return 0


def cmd_sweep(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from core.engine.models import resolve_device
    from core.study import sweep_run
    from core.study.report_text import format_sweep
    from core.study.sweep import SweepGrid

    check_dataset(args, parser)
    check_executor_flags(args, parser)
    args.norm = "linf"  # sweeps train and evaluate in Linf: the training epsilons are Linf budgets
    grid = SweepGrid(args.dataset, tuple(args.methods), tuple(args.train_eps or ()), tuple(args.seeds),
                     tuple(args.archs or ()), tuple(args.students or ()))
    try:
        grid.check()
        check_eps_flags(args)
        device = resolve_device(args.device)
    except LogitscopeError as exc:
        parser.error(str(exc))
    if args.json is not None:
        output_file(args.json, "--json", parser)
    n = len(grid.combinations()) * (1 + len(grid.students))
    if not args.quiet:
        students = f" ({n - len(grid.combinations())} of them students)" if grid.students else ""
        print(f"sweep: {n} models{students} on {args.dataset}, executor {args.executor}; finished models and "
              "entries in the cache are reused", file=sys.stderr)
    try:
        done, executor = run_on_executor(args, lambda ex: sweep_run.run(
            grid, ex, args.eps, args.steps, str(device), args.data_dir, progress_bar(args.quiet),
            reliable=args.reliable, reliable_eps=args.reliable_eps))
    except (Cancelled, KeyboardInterrupt):
        print("\ninterrupted: every finished model and unit of logits is in the cache; run the same command again to "
              "resume where it stopped.", file=sys.stderr)
        return 130
    report_retries(executor)
    result = sweep_run.summary(args.dataset, done.recipes, done.outcome, args.steps, args.reliable, args.data_dir)
    print(format_sweep(result))
    if args.json is not None:
        atomic_write(args.json, json.dumps(result, indent=2).encode())
        print(f"\nSummary written to {args.json}")
    return 0


def cmd_bundle(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from core.app import lab, views
    from core.app.bundle import write_bundle

    check_dataset(args, parser)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if names != ["all"]:
        known = views.catalog(args.dataset, extra=lab.run_recipes(args.dataset, trained=False))
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            parser.error(f"--models: unknown model(s) {', '.join(unknown) or '(none given)'} for {args.dataset}; "
                         f"choose from {', '.join(known)}, or all")
    if args.out.is_dir():
        parser.error(f"--out {args.out} is a directory: give a file path, e.g. {args.dataset}-bundle.zip")
    output_file(args.out, "--out", parser)
    written = write_bundle(args.dataset, args.out, args.models, args.norm, args.steps, args.data_dir,
                           maps=not args.no_maps, progress=progress_bar(args.quiet))
    m = written.manifest
    shown = [x["name"] for x in m["models"] if x["shown"]]
    print(f"Bundle written to {written.path} ({written.bytes / 1e6:.1f} MB): {m['dataset']}, {len(shown)} models "
          f"({', '.join(shown)}), {len(m['eps'])} epsilons, {len(m['files'])} files.\n"
          f"Serve it with: LOGITSCOPE_DEMO={written.path} streamlit run app.py")
    return 0
