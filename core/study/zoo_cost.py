"""What `python -m core precompute --zoo all` would cost, on paper: units, FLOPs, GPU-hours, wall time on N GPUs.

Nothing is downloaded and nothing is written. Each model's forward cost per image is measured on PyTorch's
meta device, without weights (`core.study.zoo_flops`; a few zoo models take their family's stated cost, and
the estimate says which).

The units are exactly `core.study.precompute.plan`'s. The cost of a unit, in forward passes per image:
- clean: 1;  PGD-k: k + 1 forwards and k backwards, a backward counted as `BACKWARD` forwards;
- with evidence (one unit per model, whole split): AutoAttack "fast" at the findings' epsilon (a clean
  forward, APGD-CE's `AA_ITERATIONS` steps on the images the model classifies correctly, then APGD-T's
  `MAX_TARGETS` targets x `AA_ITERATIONS` steps on the survivors; "standard" adds FAB-T and Square on
  them), PGD-k on the margin loss, the unbounded PGD and any default-grid PGD entry not already a unit.
  Correct and surviving images are taken from the published clean and AutoAttack accuracies (at the
  leaderboard's epsilon, 8/255 for CIFAR-10 Linf, where fewer survive than at the findings' 4/255: the
  APGD-T part is a lower bound); without published numbers every image counts as correct and surviving.
Seconds are FLOPs / `GPU_TFLOPS`, plus per unit `UNIT_OVERHEAD_S` and reading the checkpoint (parameters
x 4 bytes at `LOAD_BYTES_S`), plus downloading it once per zoo model (`DOWNLOAD_BYTES_S`, in the model's
first unit). Wall time on N GPUs: units scheduled greedily, longest first, each on the least-loaded GPU.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

from core.config import AA_ITERATIONS
from core.engine.masking import UNBOUNDED_STEPS
from core.engine.reliable import MAX_TARGETS
from core.engine.zoo import INPUT_SHAPES
from core.engine.zoo_info import Published
from core.study.evidence import Evidence
from core.study.precompute import Unit, plan
from core.study.recipes import Recipe
from core.study.zoo_flops import (
    BYTES_PER_PARAM,
    ModelCost,
    local_model_cost,
    zoo_model_cost,
)

# Sustained throughput of one GPU on these models, FLOP/s. Convolutions at 32x32 with batches of a few
# hundred images in fp32 (cuDNN's default TF32 convolutions): about a third of an A100's 156 TFLOP/s TF32
# peak, a sixth of an H100's; WideResNet training throughputs reported on A100s are of this order.
GPU_TFLOPS = 50.0
BACKWARD = 2.0          # a backward pass costs about two forwards (gradients for activations and weights)
UNIT_OVERHEAD_S = 5.0   # per unit: a worker takes the task, builds the model, moves it and the images to the GPU
LOAD_BYTES_S = 1e9      # reading a checkpoint from the (shared) filesystem: 1 GB/s
DOWNLOAD_BYTES_S = 50e6  # downloading a checkpoint (Google Drive): 50 MB/s, once per zoo model
SQUARE_QUERIES = 5000   # AutoAttack standard's Square attack: forward passes per surviving image
TEST_IMAGES = {"cifar10": 10_000, "cifar100": 10_000, "imagenet": 5_000}  # test split of each zoo dataset
# (ImageNet: RobustBench's 5,000-image evaluation subset)

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class UnitCost:
    """One unit with its cost: images x forward passes x GFLOPs, and the seconds it takes on one GPU."""

    unit: Unit
    family: str
    passes: float             # forward-equivalents per image
    flops: float
    compute_s: float
    overhead_s: float         # model load (+ the model's download in its first unit)

    @property
    def seconds(self) -> float:
        return self.compute_s + self.overhead_s


@dataclass(frozen=True)
class FamilyCost:
    family: str
    models: int
    units: int
    gflops: float | None      # per image (mean over its models with a known cost)
    gpu_hours: float


@dataclass
class Estimate:
    """The plan's cost: per-unit rows, per-model and per-family summaries, totals."""

    n_images: int
    grid: tuple[float, ...]
    steps: int
    models: list[ModelCost]
    units: list[UnitCost] = field(default_factory=list)
    evidence: bool = False

    @property
    def total_flops(self) -> float:
        return sum(u.flops for u in self.units)

    @property
    def gpu_hours(self) -> float:
        return sum(u.seconds for u in self.units) / 3600

    @property
    def download_bytes(self) -> int:
        return sum(m.checkpoint_bytes for m in self.models if m.zoo)

    @property
    def unknown(self) -> list[str]:
        """Models whose cost is unknown (counted as zero)."""
        return [m.name for m in self.models if m.gflops is None]

    def model_hours(self, name: str) -> float:
        return sum(u.seconds for u in self.units if u.unit.model == name) / 3600

    def model_units(self, name: str) -> int:
        return sum(1 for u in self.units if u.unit.model == name)

    def families(self) -> list[FamilyCost]:
        out = []
        for fam in dict.fromkeys(m.family for m in self.models):
            ms = [m for m in self.models if m.family == fam]
            known = [m.gflops for m in ms if m.gflops is not None]
            names = {m.name for m in ms}
            rows = [u for u in self.units if u.unit.model in names]
            out.append(FamilyCost(fam, len(ms), len(rows), sum(known) / len(known) if known else None,
                                  sum(u.seconds for u in rows) / 3600))
        return sorted(out, key=lambda f: -f.gpu_hours)

    def wall_seconds(self, gpus: int) -> float:
        return schedule([u.seconds for u in self.units], gpus)


def schedule(durations: Sequence[float], gpus: int) -> float:
    """Makespan of greedy longest-first scheduling: each job, longest first, on the least-loaded of `gpus`."""
    if gpus < 1:
        raise ValueError("gpus must be at least 1")
    loads = [0.0] * gpus
    heapq.heapify(loads)
    for d in sorted(durations, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + d)
    return max(loads)


def pgd_passes(steps: int) -> float:
    """Forward-equivalents per image of PGD-k: k + 1 forwards (the last gives the logits) and k backwards."""
    return steps + 1 + steps * BACKWARD


def autoattack_passes(pub: Published | None, version: str = "fast") -> float:
    """Forward-equivalents per image of AutoAttack at one epsilon (see the module docstring)."""
    correct = pub.clean if pub and pub.clean is not None else 1.0
    survive = pub.autoattack if pub and pub.autoattack is not None else 1.0
    step = 1 + BACKWARD
    out = 1 + correct * AA_ITERATIONS * step + survive * MAX_TARGETS * AA_ITERATIONS * step
    if version == "standard":  # FAB-T (targets x iterations, gradients) and Square (queries, forwards only)
        out += survive * (MAX_TARGETS * AA_ITERATIONS * step + SQUARE_QUERIES)
    return out


def evidence_passes(pub: Published | None, ev: Evidence, grid: Sequence[float], version: str = "fast") -> float:
    """Forward-equivalents per image of a model's evidence unit, beyond the PGD units of `grid`."""
    steps = ev.pgd.steps
    out = sum(autoattack_passes(pub, version) for e in ev.reliable_eps if e > 0)
    out += pgd_passes(steps) + pgd_passes(UNBOUNDED_STEPS)  # margin loss at the findings' eps; unbounded
    have = {float(e) for e in grid}
    out += sum(1 if e == 0 else pgd_passes(steps) for e in ev.grid if float(e) not in have)
    return out


def estimate(recipes: Sequence[Recipe], grid: Sequence[float], n_images: int, batch_size: int, steps: int,
             dataset: str = "cifar10", evidence: Evidence | None = None, reliable: str = "fast",
             progress: Progress | None = None) -> Estimate:
    """The cost of precomputing `recipes` over `grid` (0 = clean) on `n_images` images; see the module docstring.

    `dataset` gives the input shape; `evidence` adds one evidence unit per model (AutoAttack `reliable`).
    """
    in_shape = INPUT_SHAPES.get(dataset, (3, 32, 32))
    say = progress or (lambda what, fraction: None)
    costs: dict[str, ModelCost] = {}
    for i, r in enumerate(recipes):
        say(f"measuring {r.name}", i / max(1, len(recipes)))
        costs[r.key] = zoo_model_cost(*r.zoo) if r.zoo is not None else local_model_cost(r, in_shape)
    say("measuring", 1.0)
    units = plan(recipes, grid, n_images, batch_size)
    if evidence is not None:
        units += [Unit(r.name, r.key, evidence.eps, 0, n_images, 1, kind="evidence") for r in recipes]
    out = Estimate(n_images, tuple(float(e) for e in grid), steps, list(costs.values()), evidence=evidence is not None)
    downloaded: set[str] = set()
    for u in units:
        m = costs[u.key]
        if u.kind == "evidence":
            passes = evidence_passes(m.published, evidence, grid, reliable)
        else:
            passes = 1.0 if u.eps == 0 else pgd_passes(steps)
        flops = (u.stop - u.start) * passes * (m.gflops or 0.0) * 1e9
        overhead = UNIT_OVERHEAD_S + m.checkpoint_bytes / LOAD_BYTES_S
        if m.zoo and u.key not in downloaded:
            downloaded.add(u.key)
            overhead += m.checkpoint_bytes / DOWNLOAD_BYTES_S
        out.units.append(UnitCost(u, m.family, passes, flops, flops / (GPU_TFLOPS * 1e12), overhead))
    return out


def assumptions(est: Estimate) -> list[str]:
    """The estimate's assumptions in plain words, for the command line and the README."""
    fallback = [m for m in est.models if not m.source.startswith("measured")]
    lines = [
        f"forward FLOPs per image measured on PyTorch's meta device (no download, no weights); "
        f"{len(est.models) - len(fallback)} of {len(est.models)} models measured this way",
        f"one GPU sustains {GPU_TFLOPS:g} TFLOP/s on these models (an A100/H100-class GPU in fp32 with TF32 "
        f"convolutions, about a third of an A100's TF32 peak)",
        f"clean = 1 forward per image; PGD-{est.steps} = {est.steps + 1} forwards + {est.steps} backwards, "
        f"a backward = {BACKWARD:g} forwards ({pgd_passes(est.steps):g} forward-equivalents)",
        f"per unit {UNIT_OVERHEAD_S:g} s of start-up plus reading the checkpoint at {LOAD_BYTES_S / 1e9:g} GB/s; "
        f"each zoo checkpoint (parameters x {BYTES_PER_PARAM} bytes) downloaded once at "
        f"{DOWNLOAD_BYTES_S / 1e6:g} MB/s, in its model's first unit",
        "wall time: units scheduled greedily, longest first, each on the least-loaded GPU; one unit per GPU at a "
        "time, no dependencies between units",
    ]
    if est.evidence:
        lines.append(f"evidence: AutoAttack fast = APGD-CE {AA_ITERATIONS} steps on the correctly classified "
                     f"images + APGD-T {MAX_TARGETS} targets x {AA_ITERATIONS} steps on the survivors, both "
                     "taken from the published clean and AutoAttack accuracies (survivors at the leaderboard's "
                     "8/255, fewer than at the findings' epsilon: a lower bound); plus margin-loss and "
                     f"unbounded ({UNBOUNDED_STEPS}-step) PGD")
    local = [m.name for m in est.models if not m.zoo]
    if local:
        lines.append(f"local models ({len(local)}): evaluation only; training a missing one is not estimated")
    lines += [f"{m.name}: {m.source}" for m in fallback]
    return lines


def hours(seconds: float) -> str:
    """'3.2 h', '45 min' or '12 s'."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{math.ceil(seconds)} s"
