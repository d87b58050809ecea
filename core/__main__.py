"""The command line: `python -m core reproduce --dataset digits [--seeds N] [--eps LIST] [--json PATH]`.

It calls the same functions as the app's pages. Usage errors exit with status 2 and a message;
errors found while running (missing data, unreadable files) exit with status 1 and a message.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.config import check_eps, cache_dir
from core.data import DATASETS, DESCRIPTIONS
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
    r.add_argument("--dataset", default="digits", help=f"dataset name ({', '.join(sorted(DATASETS))}); default digits")
    r.add_argument("--seeds", type=_positive, default=1, help="number of seeds (0..N-1) to train and average; default 1")
    r.add_argument("--eps", type=_eps_list, default=None, help="comma-separated attack epsilons in pixel units "
                   "(0 = clean is always added); default: the dataset's grid")
    r.add_argument("--norm", choices=("linf", "l2"), default="linf", help="threat model of the evaluation attack")
    r.add_argument("--steps", type=_positive, default=None, help="PGD steps of the evaluation attack; default 20")
    r.add_argument("--json", type=Path, default=None, help="write the report as JSON to this path")
    r.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    r.add_argument("--data-dir", default=None, help="directory with already-downloaded datasets")
    r.add_argument("--quiet", action="store_true", help="no progress bars")

    sub.add_parser("datasets", help="list the registered datasets")
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
    from core.study import eval_attack

    if args.dataset not in DATASETS:
        parser.error(f"unknown dataset {args.dataset!r}: choose one of {', '.join(sorted(DATASETS))}")
    try:
        for e in args.eps or []:
            check_eps(e, args.norm)
        attack = eval_attack(args.dataset, args.norm, args.steps)
    except LogitscopeError as exc:
        parser.error(str(exc))
    if args.json is not None and args.json.is_dir():
        parser.error(f"--json {args.json} is a directory: give a file path, e.g. report.json")
    device = resolve_device(args.device)
    result = rep.reproduce(args.dataset, range(args.seeds), args.eps, attack, device, args.data_dir,
                           progress=_progress_bar(args.quiet))
    print(rep.format_report(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"\nReport written to {args.json}")
    return 0


def cmd_datasets(args, parser) -> int:
    for name in sorted(DATASETS):
        print(f"{name:12s} {DESCRIPTIONS[name]}")
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
    handler = {"reproduce": cmd_reproduce, "datasets": cmd_datasets, "cache": cmd_cache}[args.command]
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
