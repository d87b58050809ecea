"""The command line: `python -m core reproduce --dataset digits [--seeds N] [--eps LIST] [--reliable fast|standard]
[--reliable-eps LIST] [--json PATH]`,
`python -m core datasets`, `python -m core zoo [--dataset D] [--threat T]`, `python -m core cache`,
`python -m core precompute --dataset D [--models NAMES|all] [--zoo NAME ...]` and
`python -m core bundle --dataset D --out PATH`.

It calls the same functions as the app's pages. Usage errors exit with status 2 and a message;
errors found while running (missing data, unreadable files) exit with status 1 and a message.
Each subcommand imports the layers it uses when it runs, so `--help` and usage errors answer at once,
without loading torch. The command line sits on top of `core.app`, `core.study` and `core.engine`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from functools import partial
from pathlib import Path

from core.config import cache_dir, check_eps
from core.engine.data import DATASETS, DESCRIPTIONS, SCHEME_DESCRIPTIONS, dataset_scheme, is_dataset_name
from core.errors import Cancelled, LogitscopeError
from core.storage import atomic_write


def _eps_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers, e.g. 0,0.05,0.1")
    if not values:
        raise argparse.ArgumentTypeError("give at least one epsilon, e.g. 0,0.05,0.1")
    return values


MAX_COUNT = 10_000  # PGD steps (AttackSpec's own limit) and other counts
MAX_SEEDS = 100     # each seed trains the whole study again
MAX_WORKERS = 64    # worker processes of reproduce (each holds its own torch)


def _positive(text: str, most: int = MAX_COUNT) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    if n > most:
        raise argparse.ArgumentTypeError(f"must be at most {most}, got {n}")
    return n


def _output_file(path: Path, flag: str, parser: argparse.ArgumentParser) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core", description="Logitscope: logits of adversarially-trained models.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("reproduce", help="train (or reuse) the study's models and reproduce the paper's findings",
                       description="Train or reuse standard, PGD-AT, TRADES and distilled students; evaluate them "
                                   "clean, under PGD over an epsilon grid (the fast attack: an upper bound on robust "
                                   "accuracy) and under AutoAttack at the findings' epsilon (robust accuracy), with the "
                                   "gradient-masking check; print the table and the findings' verdicts with their "
                                   "intervals, and write a JSON report.")
    r.add_argument("--dataset", default="digits", help=f"dataset name ({', '.join(sorted(DATASETS))}), or your own "
                   "data as npz:<path> or folder:<path> (see `datasets`); default digits")
    r.add_argument("--arch", default=None, help="architecture of every model (e.g. preact_resnet18 on a GPU); "
                   "default: the dataset's")
    r.add_argument("--seeds", type=partial(_positive, most=MAX_SEEDS), default=1,
                   help=f"number of seeds (0..N-1) to train and average, at most {MAX_SEEDS}; default 1")
    r.add_argument("--eps", type=_eps_list, default=None, help="comma-separated epsilons of the PGD grid in pixel "
                   "units (0 = clean is always added); default: the dataset's grid")
    r.add_argument("--norm", choices=("linf", "l2"), default="linf", help="threat model of PGD and AutoAttack")
    r.add_argument("--steps", type=_positive, default=None, help="PGD steps of the evaluation attack; default 20")
    r.add_argument("--reliable", choices=("fast", "standard"), default="fast", help="the AutoAttack version behind "
                   "every robust accuracy: fast = APGD-CE + APGD-T (the default), standard = APGD-CE, APGD-T, FAB-T "
                   "and Square (several times slower: a final number, or a model suspected of gradient masking)")
    r.add_argument("--reliable-eps", type=_eps_list, default=None, metavar="LIST", help="comma-separated epsilons at "
                   "which AutoAttack also runs, beside the findings' epsilon (each costs about 10 s per digits model "
                   "on two CPU cores); default: the findings' epsilon only")
    r.add_argument("--workers", type=partial(_positive, most=MAX_WORKERS), default=None, help="processes that "
                   "train and evaluate models side by side, sharing the CPU cores out (1: this process alone); "
                   "default: one per CPU core (at most 8), one thread each; on a GPU, this process alone")
    r.add_argument("--json", type=Path, default=None, help="write the report as JSON to this path")
    r.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    r.add_argument("--data-dir", default=None, help="folder with already-downloaded datasets in torchvision's layout "
                   "(e.g. <dir>/MNIST/raw/, <dir>/cifar-10-batches-py/); relative own-data paths start here too")
    r.add_argument("--quiet", action="store_true", help="no progress bars")

    d = sub.add_parser("datasets", help="list the registered datasets and how to use your own data")
    z = sub.add_parser("zoo", help="list the RobustBench model zoo", description="List RobustBench's models "
                       "(dataset, threat model, name); ensembles may return probabilities instead of logits.")
    z.add_argument("--dataset", default=None, help="cifar10, cifar100 or imagenet; default all")
    z.add_argument("--threat", default=None, help="Linf, L2, corruptions or corruptions_3d; default all")
    c = sub.add_parser("cache", help="show where the cache lives and how large it is")

    pc = sub.add_parser("precompute", help="compute (and train if missing) logits over an epsilon grid, resumably",
                        description="Compute the logits the app shows for chosen models and epsilons: local recipes "
                                    "(trained if missing) and RobustBench zoo models. Each model x epsilon (x chunk of "
                                    "images on big test sets) lands in the cache as soon as it is done, so running the "
                                    "same command again after an interruption resumes where it stopped.")
    pc.add_argument("--dataset", default="digits", help="dataset name; default digits")
    pc.add_argument("--models", default="all", help="comma-separated local model names (standard, pgd-at, trades, "
                    "student:pgd-at:none, ..., fast-at), all (the default study) or none; default all")
    pc.add_argument("--zoo", nargs="+", default=[], metavar="NAME", help="RobustBench model names (cifar10), e.g. "
                    "Wong2020Fast; see `python -m core zoo`")
    pc.add_argument("--threat", default="Linf", help="RobustBench threat model of the --zoo names; default Linf")
    pc.add_argument("--eps", type=_eps_list, default=None, help="comma-separated epsilons in pixel units (0 = clean "
                    "is always added); default: the grid the app shows")
    pc.add_argument("--norm", choices=("linf", "l2"), default="linf", help="threat model of the evaluation attack")
    pc.add_argument("--steps", type=_positive, default=None, help="PGD steps of the evaluation attack; default 20")
    pc.add_argument("--evidence", action="store_true", help="also each model's evidence (what the overview and "
                    "reproduce state): AutoAttack at the findings' epsilon, margin-loss and unbounded PGD, and the "
                    "default PGD grid the gradient-masking check reads; one unit per model, never in chunks "
                    "(about 10 s per digits model on two CPU cores, far more for CIFAR-10 models without a GPU)")
    pc.add_argument("--reliable", choices=("fast", "standard"), default="fast", help="with --evidence: the "
                    "AutoAttack version (fast = APGD-CE + APGD-T; standard adds FAB-T and Square)")
    pc.add_argument("--reliable-eps", type=_eps_list, default=None, metavar="LIST", help="with --evidence: more "
                    "epsilons for AutoAttack beside the findings' epsilon")
    pc.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    pc.add_argument("--data-dir", default=None, help="folder with already-downloaded datasets in torchvision's layout")
    pc.add_argument("--quiet", action="store_true", help="no progress bars")

    b = sub.add_parser("bundle", help="pack a dataset's logits, checkpoints and lab runs into one portable file",
                       description="Write a bundle (a zip with a manifest and checksums; nothing pickled) of what the "
                                   "app's pages need for one dataset, e.g. for the hosted demo (LOGITSCOPE_DEMO).")
    b.add_argument("--dataset", default="digits", help="dataset name; default digits")
    b.add_argument("--models", default="all", help="comma-separated model names as the app lists them (zoo models: "
                   "rb:<name>), or all: every model whose logits are cached; default all")
    b.add_argument("--norm", choices=("linf", "l2"), default="linf", help="the evaluation attack's norm; default linf")
    b.add_argument("--steps", type=_positive, default=None, help="the evaluation attack's PGD steps; default 20")
    b.add_argument("--data-dir", default=None, help="folder with already-downloaded datasets in torchvision's layout")
    b.add_argument("--no-maps", action="store_true", help="leave out the embedding page's precomputed UMAP maps")
    b.add_argument("--out", type=Path, required=True, help="the bundle file to write, e.g. digits-bundle.zip")
    b.add_argument("--quiet", action="store_true", help="no progress bars (repairs of the cache, maps)")
    for own in (r, d, z, c, pc, b):
        own.set_defaults(subparser=own)
    return p


def _progress_bar(quiet: bool):
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


def cmd_reproduce(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from core.engine.models import ARCHS, resolve_device
    from core.study import report as rep
    from core.study.hyper import eval_attack
    from core.study.recipes import default_recipes

    if args.arch is not None and args.arch not in ARCHS:
        parser.error(f"unknown architecture {args.arch!r}: choose one of {', '.join(sorted(ARCHS))}")
    _check_dataset(args, parser)
    try:
        _check_eps_flags(args)
        attack = eval_attack(args.dataset, args.norm, args.steps)
        rep.plan(args.dataset, attack, args.eps, args.reliable, args.reliable_eps, args.data_dir)
    except LogitscopeError as exc:
        parser.error(str(exc))
    if args.json is not None:
        _output_file(args.json, "--json", parser)
    try:
        device = resolve_device(args.device)
    except LogitscopeError as exc:
        parser.error(str(exc))
    recipes = partial(default_recipes, arch=args.arch) if args.arch else default_recipes
    result = rep.reproduce(args.dataset, range(args.seeds), args.eps, attack, device, args.data_dir,
                           progress=_progress_bar(args.quiet), recipes=recipes, reliable=args.reliable,
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


def _check_eps_flags(args: argparse.Namespace) -> None:
    """--eps and --reliable-eps against the norm: a LogitscopeError that names the flag."""
    for flag, values in (("--eps", args.eps), ("--reliable-eps", args.reliable_eps)):
        for e in values or []:
            try:
                check_eps(e, args.norm)
            except LogitscopeError as exc:
                raise LogitscopeError(f"{flag}: {exc}") from exc


def _check_dataset(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
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


def cmd_precompute(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from core.engine.models import resolve_device
    from core.study import precompute as pc

    _check_dataset(args, parser)
    if args.reliable_eps is not None and not args.evidence:
        parser.error("--reliable-eps needs --evidence (AutoAttack runs only as part of the evidence)")
    try:
        _check_eps_flags(args)
        recipes = pc.select_models(args.dataset, args.models, args.zoo, args.threat)
    except LogitscopeError as exc:
        parser.error(str(exc))
    try:
        device = resolve_device(args.device)
    except LogitscopeError as exc:
        parser.error(str(exc))
    try:
        out = pc.precompute(args.dataset, recipes, args.eps, args.norm, args.steps, device, args.data_dir,
                            progress=_progress_bar(args.quiet), evidence=args.evidence, reliable=args.reliable,
                            reliable_eps=args.reliable_eps)
    except (Cancelled, KeyboardInterrupt):
        print("interrupted: every finished model and unit of logits is in the cache; run the same command again to "
              "resume where it stopped.", file=sys.stderr)
        return 130
    print(f"{args.dataset}: {len(out.models)} models x {len(out.grid)} epsilons ({out.attack.norm} PGD-"
          f"{out.attack.steps}, {out.data.split} split{'' if out.data.limit is None else f', first {out.data.limit}'})")
    if out.evidence is not None:
        eps = ", ".join(f"{e:g}" for e in out.evidence.reliable_eps if e > 0)
        print(f"evidence: {out.evidence.reliable.describe()} at eps {eps}, and the gradient-masking check's attacks")
    print(f"computed {len(out.computed)} units, {len(out.skipped)} already cached"
          + (f"; trained {', '.join(out.trained)}" if out.trained else "") + f". Cache: {cache_dir()}")
    return 0


def cmd_bundle(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from core.app import lab, views
    from core.app.bundle import write_bundle

    _check_dataset(args, parser)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if names != ["all"]:
        known = views.catalog(args.dataset, extra=lab.run_recipes(args.dataset, trained=False))
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            parser.error(f"--models: unknown model(s) {', '.join(unknown) or '(none given)'} for {args.dataset}; "
                         f"choose from {', '.join(known)}, or all")
    if args.out.is_dir():
        parser.error(f"--out {args.out} is a directory: give a file path, e.g. {args.dataset}-bundle.zip")
    _output_file(args.out, "--out", parser)
    written = write_bundle(args.dataset, args.out, args.models, args.norm, args.steps, args.data_dir,
                           maps=not args.no_maps, progress=_progress_bar(args.quiet))
    m = written.manifest
    shown = [x["name"] for x in m["models"] if x["shown"]]
    print(f"Bundle written to {written.path} ({written.bytes / 1e6:.1f} MB): {m['dataset']}, {len(shown)} models "
          f"({', '.join(shown)}), {len(m['eps'])} epsilons, {len(m['files'])} files.\n"
          f"Serve it with: LOGITSCOPE_DEMO={written.path} streamlit run app.py")
    return 0


def _check_cache_dir(parser: argparse.ArgumentParser) -> None:
    """LOGITSCOPE_CACHE (or ./cache) must be a folder, or not exist yet."""
    root = cache_dir()
    if root.exists() and not root.is_dir():
        parser.error(f"the cache {root} is a file, not a folder: point LOGITSCOPE_CACHE at a folder (or unset it to "
                     "use ./cache)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = {"reproduce": cmd_reproduce, "datasets": cmd_datasets, "zoo": cmd_zoo, "cache": cmd_cache,
               "precompute": cmd_precompute, "bundle": cmd_bundle}[args.command]
    own = args.subparser  # usage errors print the subcommand's usage, not the top level's
    try:
        if args.command != "datasets":
            _check_cache_dir(own)
        return handler(args, own)
    except LogitscopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (Cancelled, KeyboardInterrupt):
        print("interrupted: finished models and logits stay in the cache; run again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
