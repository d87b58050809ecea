"""The command line's parser: every subcommand, its flags and their help."""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from core.cli.args import MAX_COUNT, MAX_SEEDS, MAX_WORKERS, eps_list, name_list, positive, seed_list
from core.engine.data import DATASETS


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
    r.add_argument("--seeds", type=partial(positive, most=MAX_SEEDS), default=1,
                   help=f"number of seeds (0..N-1) to train and average, at most {MAX_SEEDS}; default 1")
    r.add_argument("--eps", type=eps_list, default=None, help="comma-separated epsilons of the PGD grid in pixel "
                   "units (0 = clean is always added); default: the dataset's grid")
    r.add_argument("--norm", choices=("linf", "l2"), default="linf", help="threat model of PGD and AutoAttack")
    r.add_argument("--steps", type=positive, default=None, help="PGD steps of the evaluation attack; default 20")
    r.add_argument("--reliable", choices=("fast", "standard"), default="fast", help="the AutoAttack version behind "
                   "every robust accuracy: fast = APGD-CE + APGD-T (the default), standard = APGD-CE, APGD-T, FAB-T "
                   "and Square (several times slower: a final number, or a model suspected of gradient masking)")
    r.add_argument("--reliable-eps", type=eps_list, default=None, metavar="LIST", help="comma-separated epsilons at "
                   "which AutoAttack also runs, beside the findings' epsilon (each costs about 10 s per digits model "
                   "on two CPU cores); default: the findings' epsilon only")
    r.add_argument("--workers", type=partial(positive, most=MAX_WORKERS), default=None, help="processes that "
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
    pc.add_argument("--eps", type=eps_list, default=None, help="comma-separated epsilons in pixel units (0 = clean "
                    "is always added); default: the grid the app shows")
    pc.add_argument("--norm", choices=("linf", "l2"), default="linf", help="threat model of the evaluation attack")
    pc.add_argument("--steps", type=positive, default=None, help="PGD steps of the evaluation attack; default 20")
    pc.add_argument("--evidence", action="store_true", help="also each model's evidence (what the overview and "
                    "reproduce state): AutoAttack at the findings' epsilon, margin-loss and unbounded PGD, and the "
                    "default PGD grid the gradient-masking check reads; one unit per model, never in chunks "
                    "(about 10 s per digits model on two CPU cores, far more for CIFAR-10 models without a GPU)")
    pc.add_argument("--reliable", choices=("fast", "standard"), default="fast", help="with --evidence: the "
                    "AutoAttack version (fast = APGD-CE + APGD-T; standard adds FAB-T and Square)")
    pc.add_argument("--reliable-eps", type=eps_list, default=None, metavar="LIST", help="with --evidence: more "
                    "epsilons for AutoAttack beside the findings' epsilon")
    pc.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    pc.add_argument("--data-dir", default=None, help="folder with already-downloaded datasets in torchvision's layout")
    _executor_flags(pc)
    pc.add_argument("--dry-run", action="store_true", help="print the units, their estimated cost and the wall time "
                    "on --gpus GPUs, and stop: nothing is downloaded, trained or computed")
    pc.add_argument("--gpus", type=partial(positive, most=MAX_COUNT), default=1, help="with --dry-run: the number "
                    "of GPUs the estimate is for; default 1")
    pc.add_argument("--quiet", action="store_true", help="no progress bars")

    sw = sub.add_parser("sweep", help="train and evaluate every combination of method, training epsilon, seed and "
                        "architecture", description="Train (or reuse) and evaluate one model per combination of "
                        "--methods, --train-eps, --seeds and --archs (and students of each, with --students), "
                        "through the same recipes, training loop and logits cache as everything else: clean and "
                        "PGD logits over the epsilon grid, and AutoAttack at the findings' epsilon (robust "
                        "accuracy). Resumable: running the same command again continues where it stopped. Prints "
                        "a table and writes a JSON summary with every model's statistics, accuracies and intervals.")
    sw.add_argument("--dataset", default="digits", help="dataset name; default digits")
    sw.add_argument("--methods", type=name_list, default=["standard", "pgd-at", "trades"], help="comma-separated "
                    "training methods: standard, pgd-at, trades, fast-at; default standard,pgd-at,trades")
    sw.add_argument("--train-eps", type=eps_list, default=None, metavar="LIST", help="comma-separated Linf training "
                    "epsilons in pixel units (standard models ignore them); default: the dataset's (0.2 for digits)")
    sw.add_argument("--seeds", type=seed_list, default=[0], metavar="LIST", help="comma-separated seeds, e.g. 0,1,2; "
                    "default 0")
    sw.add_argument("--archs", type=name_list, default=None, metavar="LIST", help="comma-separated architectures; "
                    "default: the dataset's")
    sw.add_argument("--students", type=name_list, default=None, metavar="MANIPULATIONS", help="also a student of "
                    "every model, distilled on clean inputs under each of these manipulations (none, shuffle_nonmax, "
                    "flatten_nonmax, resample_nonmax, global_confidence, hard_labels)")
    sw.add_argument("--eps", type=eps_list, default=None, help="comma-separated evaluation epsilons (PGD) in pixel "
                    "units; default: the dataset's grid")
    sw.add_argument("--steps", type=positive, default=None, help="PGD steps of the evaluation attack; default 20")
    sw.add_argument("--reliable", choices=("fast", "standard"), default="fast", help="the AutoAttack version behind "
                    "every robust accuracy (fast = APGD-CE + APGD-T; standard adds FAB-T and Square)")
    sw.add_argument("--reliable-eps", type=eps_list, default=None, metavar="LIST", help="more epsilons for AutoAttack "
                    "beside the findings' epsilon")
    sw.add_argument("--json", type=Path, default=None, help="write the summary as JSON to this path")
    sw.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    sw.add_argument("--data-dir", default=None, help="folder with already-downloaded datasets in torchvision's layout")
    _executor_flags(sw)
    sw.add_argument("--quiet", action="store_true", help="no progress bars")

    b = sub.add_parser("bundle", help="pack a dataset's logits, checkpoints and lab runs into one portable file",
                       description="Write a bundle (a zip with a manifest and checksums; nothing pickled) of what the "
                                   "app's pages need for one dataset, e.g. for the hosted demo (LOGITSCOPE_DEMO).")
    b.add_argument("--dataset", default="digits", help="dataset name; default digits")
    b.add_argument("--models", default="all", help="comma-separated model names as the app lists them (zoo models: "
                   "rb:<name>), or all: every model whose logits are cached; default all")
    b.add_argument("--norm", choices=("linf", "l2"), default="linf", help="the evaluation attack's norm; default linf")
    b.add_argument("--steps", type=positive, default=None, help="the evaluation attack's PGD steps; default 20")
    b.add_argument("--data-dir", default=None, help="folder with already-downloaded datasets in torchvision's layout")
    b.add_argument("--no-maps", action="store_true", help="leave out the embedding page's precomputed UMAP maps")
    b.add_argument("--out", type=Path, required=True, help="the bundle file to write, e.g. digits-bundle.zip")
    b.add_argument("--quiet", action="store_true", help="no progress bars (repairs of the cache, maps)")
    for own in (r, d, z, c, pc, sw, b):
        own.set_defaults(subparser=own)
    return p


def _executor_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", choices=("local", "ray"), default="local", help="where the units run: local (in "
                   "this process, one after another; the default) or ray (Ray tasks on a local Ray started here, or "
                   "on the cluster --ray-address names)")
    p.add_argument("--ray-address", default=None, metavar="ADDRESS", help="with --executor ray: join this Ray cluster "
                   "(e.g. auto on a cluster node, or ray://HEAD:10001) instead of starting a local Ray")
    p.add_argument("--no-shared-fs", action="store_true", help="with --executor ray: the workers do not see this "
                   "cache; each task gets the checkpoints it needs and returns its tensors, and this process writes "
                   "them into the cache")
    p.add_argument("--threads", type=partial(positive, most=MAX_WORKERS), default=None, help="CPU threads per unit "
                   "(Ray: CPUs each task reserves); default: every core for local, 1 for ray on a CPU. Results are "
                   "bit-identical between executors at the same --threads")
