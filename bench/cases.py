"""The benchmark cases. Each returns one or more result rows measured against a reference in the same run."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from bench import app_cases, study_cases, sweep_cases
from bench.common import Result, judge, median_time, ratio_row, workspace
from bench.reference import reference_epoch, reference_pgd
from core.config import AttackSpec
from core.engine.attacks import attack_grid, pgd
from core.engine.data import load_dataset
from core.engine.logits import eval_batch_size
from core.engine.models import ARCHS, attack_dtype, build_model


def resnet18_model() -> nn.Module:
    """The CIFAR ResNet-18 of the registry when present, else torchvision's ResNet-18."""
    if "preact_resnet18" in ARCHS:
        return build_model("preact_resnet18", (3, 32, 32), 10, (0.5,) * 3, (0.25,) * 3)
    import torchvision

    return torchvision.models.resnet18(num_classes=10)


def pgd_throughput(quick: bool) -> list[Result]:
    """Images x steps per second of our PGD against the reference loop, same model, batch, steps."""
    rows = []
    torch.manual_seed(0)
    d = load_dataset("digits")
    digits = build_model("digits_cnn", d.shape, 10, d.mean, d.std).eval()
    grid = [0.05, 0.1, 0.15, 0.2, 0.3]
    steps = 10 if quick else 20
    x, y = d.x_test, d.y_test
    spec = AttackSpec(eps=0.1, steps=steps)
    batch = eval_batch_size(x.shape[1:])  # what the study and the app use
    ours = median_time(lambda: attack_grid(digits, x, y, spec, grid, batch_size=batch), 3)
    ref = median_time(lambda: [reference_pgd(digits, x, y, e, steps) for e in grid], 3)
    work = len(x) * len(grid) * steps
    rows.append(ratio_row("pgd_throughput", work / ours, work / ref, "img*steps/s",
                           f"digits CNN, {len(x)} images x 5 eps in batches of {batch}; reference: one eps at a time"))

    net = resnet18_model().eval()
    xb = torch.rand(32 if quick else 64, 3, 32, 32)
    yb = torch.randint(0, 10, (len(xb),))
    steps = 3 if quick else 5
    spec = AttackSpec(eps=8 / 255, steps=steps)
    ours = median_time(lambda: pgd(net, xb, yb, spec), 2 if quick else 3)
    ref = median_time(lambda: reference_pgd(net, xb, yb, 8 / 255, steps), 2 if quick else 3)
    work = len(xb) * steps
    rows.append(ratio_row("pgd_throughput_resnet18", work / ours, work / ref, "img*steps/s",
                           f"CIFAR ResNet-18, batch {len(xb)}"))
    return rows


def pgd_roofline_fraction(quick: bool) -> list[Result]:
    """FLOP/s of ResNet-18 forward+backward during PGD, as a fraction of a large float32 matmul's."""
    from torch.utils.flop_counter import FlopCounterMode

    net = resnet18_model().eval()
    xb = torch.rand(32 if quick else 64, 3, 32, 32)
    yb = torch.randint(0, 10, (len(xb),))
    steps = 3 if quick else 5
    spec = AttackSpec(eps=8 / 255, steps=steps, random_start=False)
    counter = FlopCounterMode(display=False)
    with counter:
        pgd(net, xb, yb, spec)
    flops = counter.get_total_flops()
    seconds = median_time(lambda: pgd(net, xb, yb, spec), 2 if quick else 3)
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    mm = median_time(lambda: a @ b, 5)
    peak = 2 * n ** 3 / mm
    achieved = flops / seconds
    goal = "ratio >= 0.5"
    note = f"{achieved / 1e9:.1f} GFLOP/s of {peak / 1e9:.1f} GFLOP/s (float32 matmul {n}^3); reference in GFLOP/s"
    if attack_dtype("cpu") == torch.bfloat16:  # the attack's steps run in bfloat16 on this CPU: say so, fairly
        a16, b16 = a.bfloat16(), b.bfloat16()
        peak16 = 2 * n ** 3 / median_time(lambda: a16 @ b16, 5)
        note += f"; the attack runs in bfloat16 here: {achieved / peak16:.2f} of a bfloat16 matmul ({peak16 / 1e9:.0f} GFLOP/s)"
    return [Result("pgd_roofline_fraction", achieved / peak, "fraction", peak / 1e9, achieved / peak, goal,
                   judge(goal, achieved / peak, achieved / peak), note)]


def distill_live_seconds(quick: bool) -> list[Result]:
    """One default student from cached teacher logits, plus its robust evaluation over the grid."""
    from core.config import DataSpec
    from core.engine.logits import get_grid
    from core.study.hyper import eval_attack, hyper
    from core.study.recipes import ensure_model, load_model, student_recipe, teacher_recipes

    workspace().fill()
    h = hyper("digits")
    teacher = teacher_recipes("digits")[1]
    attack = eval_attack("digits")

    def run(seed: int) -> None:
        student = student_recipe(teacher, "shuffle_nonmax", seed=seed)
        ensure_model(student)
        get_grid(lambda: load_model(student), student.key, DataSpec("digits", "test"), attack, h.eps_grid)

    seeds = iter(range(1000, 1100))  # fresh seeds: never a cache hit
    seconds = median_time(lambda: run(next(seeds)), 1 if quick else 3, warmup=0)
    d = load_dataset("digits")
    model = build_model("digits_cnn", d.shape, 10, d.mean, d.std)
    ref = median_time(lambda: reference_epoch(model, d.x_train, d.y_train), 1) * h.epochs + median_time(
        lambda: [reference_pgd(model.eval(), d.x_test, d.y_test, e, h.eval_steps) for e in h.eps_grid if e > 0], 1)
    goal = "value <= 5"
    return [Result("distill_live_seconds", seconds, "s", ref, ref / seconds, goal, judge(goal, seconds, None),
                   "train a student from cached teacher logits + PGD-20 over the grid; reference = naive loop")]


def scrub_ms(quick: bool) -> list[Result]:
    """The core work behind one epsilon change on the distributions page, from cached logits."""
    from core.app import charts, views
    from core.engine import analysis
    from core.engine.logits import get_grid

    workspace().fill()
    sel = views.Selection("digits", ("standard", "pgd-at"))
    recipes = {n: r for n, r in views.catalog("digits").items() if n in sel.models}
    grid = sel.grid()
    bundle = views.load_logit_set(recipes, sel.data(), sel.attack(), grid)
    table = views.sample_table(bundle)  # computed once per selection, then cached by the page
    eps_values = iter([e for _ in range(1000) for e in grid])

    def ours() -> None:
        hist, summary = views.distribution(bundle, table, next(eps_values), "max_logit")
        charts.distribution_chart(hist, "max logit", sel.models).to_dict()

    def naive() -> None:  # re-read the cache and recompute the statistics on every change
        e = next(eps_values)
        frames = []
        for name, r in recipes.items():
            rec = get_grid(lambda: None, r.key, sel.data(), sel.attack(), grid)[e]
            frames.append(analysis.per_sample(rec.logits, rec.labels).assign(model=name))
        import pandas as pd
        pd.concat(frames).groupby("model")["max_logit"].describe()

    value = median_time(ours, 5 if quick else 15) * 1000
    ref = median_time(naive, 5 if quick else 15) * 1000
    goal = "value <= 100"
    return [Result("scrub_ms", value, "ms", ref, ref / value, goal, judge(goal, value, None),
                   "histogram + KS summary + Altair spec for 2 models; reference = re-read and recompute per change")]


CASES: dict[str, Callable[[bool], list[Result]]] = {
    "pgd_throughput": pgd_throughput,
    "pgd_roofline_fraction": pgd_roofline_fraction,
    "precompute_digits_seconds": study_cases.precompute_digits_seconds,  # first: it fills the workspace cache
    "train_throughput": study_cases.train_throughput,
    "reproduce_digits_seconds": study_cases.reproduce_digits_seconds,
    "reproduce_digits_3seeds_seconds": study_cases.reproduce_digits_3seeds_seconds,
    "distill_live_seconds": distill_live_seconds,
    "lab_replicates_seconds": study_cases.lab_replicates_seconds,
    "scrub_ms": scrub_ms,
    "warm_start_seconds": app_cases.warm_start_seconds,
    "app_findings_seconds": app_cases.app_findings_seconds,
    "demo_peak_rss_mb": app_cases.demo_peak_rss,
    "sweep_ray_overhead": sweep_cases.sweep_ray_overhead,
}
# Cases `--quick` leaves out (name one with --only to run it anyway): each trains and runs AutoAttack on ten or more
# digits models, a minute and a half or more of a quiet 2-core machine, which CI's quick suite cannot spare.
FULL_ONLY = frozenset({"train_throughput", "reproduce_digits_seconds", "reproduce_digits_3seeds_seconds",
                       "lab_replicates_seconds", "app_findings_seconds"})
