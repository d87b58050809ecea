"""The command line: `python -m core reproduce --dataset digits [--seeds N] [--eps LIST] [--json PATH]`,
`python -m core datasets`, `python -m core zoo [--dataset D] [--threat T]` and `python -m core cache`.

It calls the same functions as the app's pages. Usage errors exit with status 2 and a message;
errors found while running (missing data, unreadable files) exit with status 1 and a message.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

from core.config import check_eps, cache_dir
from core.data import DATASETS, DESCRIPTIONS, SCHEME_DESCRIPTIONS, dataset_scheme, is_dataset_name
from core.errors import Cancelled, LogitscopeError


def _eps_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers, e.g. 0,0.05,0.1")
    if not values:
        raise argparse.ArgumentTypeError("give at least one epsilon, e.g. 0,0.05,0.1")
    return values


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core", description="Logitscope: logits of adversarially-trained models.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("reproduce", help="train (or reuse) the study's models and reproduce the paper's findings",
                       description="Train or reuse standard, PGD-AT, TRADES and distilled students; evaluate them "
                                   "clean and under PGD over an epsilon grid; print the table and write a JSON report.")
    r.add_argument("--dataset", default="digits", help=f"dataset name ({', '.join(sorted(DATASETS))}), or your own "
                   "data as npz:<path> or folder:<path> (see `datasets`); default digits")
    r.add_argument("--arch", default=None, help="architecture of every model (e.g. preact_resnet18 on a GPU); "
                   "default: the dataset's")
    r.add_argument("--seeds", type=_positive, default=1, help="number of seeds (0..N-1) to train and average; default 1")
    r.add_argument("--eps", type=_eps_list, default=None, help="comma-separated attack epsilons in pixel units "
                   "(0 = clean is always added); default: the dataset's grid")
    r.add_argument("--norm", choices=("linf", "l2"), default="linf", help="threat model of the evaluation attack")
    r.add_argument("--steps", type=_positive, default=None, help="PGD steps of the evaluation attack; default 20")
    r.add_argument("--json", type=Path, default=None, help="write the report as JSON to this path")
    r.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    r.add_argument("--data-dir", default=None, help="folder with already-downloaded datasets in torchvision's layout "
                   "(e.g. <dir>/MNIST/raw/, <dir>/cifar-10-batches-py/); relative own-data paths start here too")
    r.add_argument("--quiet", action="store_true", help="no progress bars")

    sub.add_parser("datasets", help="list the registered datasets and how to use your own data")
    z = sub.add_parser("zoo", help="list the RobustBench model zoo", description="List RobustBench's models "
                       "(dataset, threat model, name); ensembles may return probabilities instead of logits.")
    z.add_argument("--dataset", default=None, help="cifar10, cifar100 or imagenet; default all")
    z.add_argument("--threat", default=None, help="Linf, L2, corruptions or corruptions_3d; default all")
    sub.add_parser("cache", help="show where the cache lives and how large it is")
    return p


def _progress_bar(quiet: bool):
    """A callback (label, fraction) that drives one tqdm bar per label, on stderr."""
    if quiet:
        return None
    from tqdm import tqdm

    state = {"label": None, "bar": None}

    def update(label: str, fraction: float) -> None:
        if label != state["label"]:
            if state["bar"] is not None:
                state["bar"].close()
            state["label"] = label
            state["bar"] = tqdm(total=1000, desc=label, leave=False, file=sys.stderr,
                                bar_format="{desc:44.44} {percentage:3.0f}%|{bar:24}| {elapsed}<{remaining}")
        bar = state["bar"]
        bar.update(int(fraction * 1000) - bar.n)

    return update


def cmd_reproduce(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from core import report as rep
    from core.models import resolve_device
    from core.study import default_recipes, eval_attack

    from core.models import ARCHS

    if args.data_dir is not None and not Path(args.data_dir).expanduser().is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a folder")
    if not is_dataset_name(args.dataset):
        parser.error(f"unknown dataset {args.dataset!r}: choose one of {', '.join(sorted(DATASETS))}, "
                     "or give your own data as npz:<path> or folder:<path>")
    if args.arch is not None and args.arch not in ARCHS:
        parser.error(f"unknown architecture {args.arch!r}: choose one of {', '.join(sorted(ARCHS))}")
    if dataset_scheme(args.dataset) is not None:
        from core.data_own import own_data_name

        try:  # the canonical name (absolute path + content hash) keys the cache
            args.dataset = own_data_name(args.dataset, args.data_dir)
        except LogitscopeError as exc:
            parser.error(str(exc))
    try:
        for e in args.eps or []:
            check_eps(e, args.norm)
        attack = eval_attack(args.dataset, args.norm, args.steps)
    except LogitscopeError as exc:
        parser.error(str(exc))
    if args.json is not None and args.json.is_dir():
        parser.error(f"--json {args.json} is a directory: give a file path, e.g. report.json")
    device = resolve_device(args.device)
    recipes = partial(default_recipes, arch=args.arch) if args.arch else default_recipes
    result = rep.reproduce(args.dataset, range(args.seeds), args.eps, attack, device, args.data_dir,
                           progress=_progress_bar(args.quiet), recipes=recipes)
    print(rep.format_report(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
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
    from core import zoo

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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = {"reproduce": cmd_reproduce, "datasets": cmd_datasets, "zoo": cmd_zoo, "cache": cmd_cache}[args.command]
    try:
        return handler(args, parser)
    except LogitscopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (Cancelled, KeyboardInterrupt):
        print("interrupted: finished models and logits stay in the cache; run again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
