"""Per-dataset defaults of the study (architecture, training, evaluation), with a reason for each value.

Also the evaluation split and the evaluation attack every page, report and bundle share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.config import AA_ITERATIONS, NORMS, AttackSpec, DataSpec
from core.engine.data import dataset_scheme, load_dataset
from core.errors import LogitscopeError


@dataclass(frozen=True)
class Hyper:
    """Defaults of one dataset, with units and the reason for each value."""

    arch: str
    epochs: int           # passes over the training split; digits converges in ~20 at this lr
    lr: float             # peak Adam learning rate of the one-cycle schedule
    train_eps: float      # Linf budget of PGD-AT and TRADES in pixel units: 0.2 is the paper-scale
                          # budget for 8x8 digits (about 3 of 16 grey levels)
    train_steps: int      # PGD steps during training: 5 steps reach most of PGD-20's loss at 1/4 of the cost
    trades_beta: float    # TRADES robustness weight; 6 is Zhang et al.'s choice
    temperature: float    # distillation temperature: 4 exposes the non-max logits without flattening them
    eps_grid: tuple[float, ...]  # evaluation epsilons (Linf, pixel units); 0 is clean
    eval_steps: int       # PGD steps for evaluation: PGD-20, step 2.5 * eps / 20
    batch_size: int = 64  # training batch size (images)
    train_limit: int | None = None  # train on the first n training images only (None: all)
    eval_limit: int | None = None   # evaluate on the first n test images only (None: all)
    finding_eps: float = 0.0  # where the findings are stated (AutoAttack runs there): half the training
                              # budget, where the AT teacher's students sit between chance and the teacher


HYPER: dict[str, Hyper] = {
    "digits": Hyper(arch="digits_cnn", epochs=20, lr=4e-3, train_eps=0.2, train_steps=5, trades_beta=6.0,
                    temperature=4.0, eps_grid=(0.0, 0.05, 0.1, 0.15, 0.2, 0.3), eval_steps=20, finding_eps=0.1),
    # The three below are sized for a laptop CPU: 10k training images (PGD-AT of small_cnn takes minutes
    # per epoch there) and 1k test images (PGD-20 at 5 epsilons); on a GPU set the limits to None.
    "mnist": Hyper(
        arch="small_cnn",    # 28x28 grey: four convolutions are plenty
        epochs=10,           # on 10k images Adam's one-cycle has converged by ~10 passes
        lr=2e-3,             # lower than digits': 3x more steps per epoch at batch 128
        train_eps=0.3,       # the standard MNIST Linf budget (Madry et al. 2018)
        train_steps=5,       # as digits: most of PGD-20's loss at a quarter of its cost
        trades_beta=6.0,     # Zhang et al.'s choice
        temperature=4.0,     # as digits
        eps_grid=(0.0, 0.1, 0.2, 0.3, 0.4),  # up to beyond the training budget, where robustness breaks
        finding_eps=0.2,     # the grid's point nearest half the budget
        eval_steps=20,       # PGD-20
        batch_size=128,      # larger images, more of them: fewer, better-used steps
        train_limit=10_000,  # a sixth of the split: CPU-feasible, and plenty for a small CNN on MNIST
        eval_limit=1_000),   # 1k test images: accuracies within about +-3% (95% interval)
    "fashion_mnist": Hyper(
        arch="small_cnn", epochs=10, lr=2e-3, trades_beta=6.0, temperature=4.0, eval_steps=20, batch_size=128,
        train_limit=10_000, eval_limit=1_000,  # all as MNIST (same size and format)
        train_eps=0.1,       # the common Fashion-MNIST budget: 0.3 destroys the textures that tell classes apart
        train_steps=5,
        eps_grid=(0.0, 0.025, 0.05, 0.1, 0.15, 0.2), finding_eps=0.05),
    "cifar10": Hyper(
        arch="small_cnn",    # CPU-feasible; preact_resnet18 (the AT literature's model) is for a GPU
        epochs=15,           # small_cnn needs more passes on colour images than on MNIST
        lr=2e-3,             # as MNIST
        train_eps=8 / 255,   # the standard CIFAR-10 Linf budget (RobustBench's Linf track)
        train_steps=5,       # steps of 2.5 * eps / 5 = 4/255, enough to leave the random start's ball
        trades_beta=6.0,     # Zhang et al.'s choice
        temperature=4.0,     # as digits
        eps_grid=(0.0, 2 / 255, 4 / 255, 8 / 255, 16 / 255),  # powers of two around the training budget
        finding_eps=4 / 255,  # half the budget, as digits
        eval_steps=20,       # PGD-20
        batch_size=128,      # as MNIST
        train_limit=10_000,  # a fifth of the split: costs clean accuracy, not the AT/standard contrast
        eval_limit=1_000),   # as MNIST
}

# Your own data ("npz:<path>", "folder:<path>"): natural-image defaults that work at any size >= 4x4.
OWN_DATA_HYPER = Hyper(arch="small_cnn", epochs=20, lr=3e-3, train_eps=8 / 255, train_steps=5, trades_beta=6.0,
                       temperature=4.0, eps_grid=(0.0, 2 / 255, 4 / 255, 8 / 255, 16 / 255), eval_steps=20,
                       finding_eps=4 / 255)


def hyper(dataset: str) -> Hyper:
    """The defaults of a dataset; own data ("npz:...", "folder:...") share OWN_DATA_HYPER."""
    if dataset in HYPER:
        return HYPER[dataset]
    if dataset_scheme(dataset) is not None:
        return OWN_DATA_HYPER
    raise LogitscopeError(f"No default training recipe for dataset {dataset!r}; available: {', '.join(HYPER)}, "
                          "or your own data as npz:<path> or folder:<path>.")


def eps_grid(dataset: str, norm: str = "linf", data_dir: str | None = None) -> tuple[float, ...]:
    """The evaluation epsilons of a dataset for a norm (pixel units; 0 is clean).

    Linf uses the dataset's grid. L2 scales it by half the square root of the input size: the L2
    ball of radius eps * sqrt(d) / 2 holds a quarter of the Linf ball's corner, a budget of the same
    order of strength (for CIFAR-10 this maps Linf 8/255 to L2 0.9, near the usual 0.5).
    """
    if norm not in NORMS:
        raise LogitscopeError(f"Unknown norm {norm!r}: use one of {', '.join(NORMS)}.")
    grid = hyper(dataset).eps_grid
    if norm == "linf":
        return tuple(float(e) for e in grid)
    c, h, w = load_dataset(dataset, data_dir).shape
    scale = math.sqrt(c * h * w) / 2
    return tuple(float(f"{e * scale:.2g}") for e in grid)


def eval_attack(dataset: str, norm: str = "linf", steps: int | None = None, seed: int = 0) -> AttackSpec:
    """The evaluation attack; its eps is a placeholder set per grid point."""
    return AttackSpec(norm=norm, eps=0.0, steps=hyper(dataset).eval_steps if steps is None else steps, seed=seed)


RELIABLE_VERSIONS = {"fast": "autoattack-fast", "standard": "autoattack-standard"}


def reliable_attack(dataset: str, norm: str = "linf", version: str = "fast", seed: int = 0) -> AttackSpec:
    """The attack robust accuracy comes from: AutoAttack (core.engine.reliable); its eps is a placeholder.

    "fast" runs APGD-CE then APGD-T (the two attacks that decide almost every point of AutoAttack's
    standard version at a fraction of its cost); "standard" adds FAB-T and the gradient-free Square
    (5000 queries), for a final number or a model suspected of masking its gradients. `dataset` is
    checked against the study's defaults; AutoAttack itself needs no per-dataset setting.
    """
    hyper(dataset)
    if version not in RELIABLE_VERSIONS:
        raise LogitscopeError(f"Unknown AutoAttack version {version!r}: use one of {', '.join(RELIABLE_VERSIONS)}.")
    return AttackSpec(norm=norm, eps=0.0, steps=AA_ITERATIONS, seed=seed, method=RELIABLE_VERSIONS[version])


def eval_data(dataset: str) -> DataSpec:
    """The evaluation split: the test split, cut to the dataset's evaluation limit if it has one."""
    return DataSpec(dataset, "test", hyper(dataset).eval_limit)
