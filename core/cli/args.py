"""Argument types and checks of the command line: usage errors found before any work, with what to do."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from core.config import cache_dir, check_eps
from core.engine.data import DATASETS, dataset_scheme, is_dataset_name
from core.errors import LogitscopeError


def eps_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers, e.g. 0,0.05,0.1")
    if not values:
        raise argparse.ArgumentTypeError("give at least one epsilon, e.g. 0,0.05,0.1")
    return values


def name_list(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError("give at least one name, e.g. standard,pgd-at")
    return values


def seed_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers, e.g. 0,1,2")
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("give one or more seeds, each 0 or more, e.g. 0,1,2")
    if len(values) > MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"at most {MAX_SEEDS} seeds")
    return list(dict.fromkeys(values))


MAX_COUNT = 10_000  # PGD steps (AttackSpec's own limit) and other counts
MAX_SEEDS = 100     # each seed trains the whole study again
MAX_WORKERS = 64    # worker processes of reproduce (each holds its own torch)


def positive(text: str, most: int = MAX_COUNT) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    if n > most:
        raise argparse.ArgumentTypeError(f"must be at most {most}, got {n}")
    return n


def output_file(path: Path, flag: str, parser: argparse.ArgumentParser) -> None:
    """Usage errors for a file to write at the end of a long run: find them before the run, not after."""
    if path.is_dir():
        parser.error(f"{flag} {path} is a directory: give a file path, e.g. {path / 'report.json'}")
    try:  # create its folder and a scratch file there now: the real write comes after the run
        folder = path.absolute().parent
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except (FileExistsError, NotADirectoryError):
        parser.error(f"{flag} {path} cannot be written: a part of its folder is a file. Choose another path")
    except OSError as exc:
        parser.error(f"{flag} {path} cannot be written ({exc.strerror or exc}): choose another path")


def progress_bar(quiet: bool):
    """A callback (label, fraction) that drives one tqdm bar per label, on stderr."""
    if quiet:
        return None
    from tqdm import tqdm

    state = {"label": None, "bar": None}

    def update(label: str, fraction: float) -> None:
        # "group | detail": one bar per group whose text is the detail (parallel work: one bar, changing text)
        group, sep, detail = label.partition(" | ")
        if group != state["label"]:
            if state["bar"] is not None:
                state["bar"].close()
            state["label"] = group
            state["bar"] = tqdm(total=1000, desc=detail if sep else label, leave=False, file=sys.stderr,
                                bar_format="{desc:56.56} {percentage:3.0f}%|{bar:24}| {elapsed}<{remaining}")
        bar = state["bar"]
        if sep and bar.desc != detail:
            bar.set_description_str(detail)
        bar.update(int(fraction * 1000) - bar.n)

    return update


def check_eps_flags(args: argparse.Namespace) -> None:
    """--eps and --reliable-eps against the norm: a LogitscopeError that names the flag."""
    for flag, values in (("--eps", args.eps), ("--reliable-eps", args.reliable_eps)):
        for e in values or []:
            try:
                check_eps(e, args.norm)
            except LogitscopeError as exc:
                raise LogitscopeError(f"{flag}: {exc}") from exc


def check_dataset(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Usage errors for --data-dir and --dataset, before any work.

    Own data ("npz:...", "folder:...") gets its canonical name (absolute path + content hash, which keys
    the cache) and is loaded now, so that contents Logitscope cannot use (one class, too few images,
    labels out of range) are a usage error too, not a failure after training.
    """
    from core.engine.data import load_dataset
    from core.engine.data_own import own_data_name

    if args.data_dir is not None and not Path(args.data_dir).expanduser().is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a folder")
    if not is_dataset_name(args.dataset):
        parser.error(f"unknown dataset {args.dataset!r}: choose one of {', '.join(sorted(DATASETS))}, "
                     "or give your own data as npz:<path> or folder:<path>")
    if dataset_scheme(args.dataset) is not None:
        try:
            args.dataset = own_data_name(args.dataset, args.data_dir)
            load_dataset(args.dataset, args.data_dir)  # memoised: the run reuses it
        except LogitscopeError as exc:
            parser.error(str(exc))


def check_cache_dir(parser: argparse.ArgumentParser) -> None:
    """LOGITSCOPE_CACHE (or ./cache) must be a folder, or not exist yet."""
    root = cache_dir()
    if root.exists() and not root.is_dir():
        parser.error(f"the cache {root} is a file, not a folder: point LOGITSCOPE_CACHE at a folder (or unset it to "
                     "use ./cache)")
