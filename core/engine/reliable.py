"""AutoAttack (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020) through the `pyautoattack` package: where robust accuracy comes from.

PGD with a fixed step size can stall on a model whose gradients mislead it; AutoAttack's APGD adapts its
step size, APGD-T aims at each of the most likely wrong classes, and the standard version adds FAB-T and
the gradient-free Square attack. This module does not re-implement any of them: it runs pyautoattack
over an epsilon grid, survivors only, and returns the model's float32 logits on its adversarial examples.

AutoAttack returns the clean image for every point it does not fool, so an entry's logits of a robust
point are its clean logits: the entries are for accuracy (which points fall, at which eps), not for the
logit distribution under attack, which the PGD entries show.

Example:
    >>> spec = AttackSpec(eps=0.0, steps=100, method="autoattack-fast")
    >>> grid = reliable_grid(model, x, y, spec, [0.0, 0.1, 0.2], batch_size=128, device="cpu")
    >>> grid[0.1].shape, grid.warnings[0.1]     # (N, K) float32 logits; what AutoAttack warned about
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from core.config import AttackSpec
from core.engine.models import attack_autocast
from core.errors import Cancelled, LogitscopeError

log = logging.getLogger(__name__)
AA_LOGGER = "auto-attack"  # the logger every pyautoattack attack and check writes to
MAX_TARGETS = 9  # APGD-T and FAB-T aim at the 9 most likely wrong classes (AutoAttack's standard setting)
_capture = threading.local()  # the warnings list of the reliable_grid call running in this thread


class _Forward(logging.Handler):
    """AutoAttack's records into this module's logger; its warnings also into the current thread's run.

    Warnings of a run are collected, returned and logged once at its end (at INFO); INFO records pass through.
    Records of threads outside a run (pyautoattack used directly) pass through at their own level.
    """

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        found = getattr(_capture, "warnings", None)
        if record.levelno >= logging.WARNING and found is not None:
            if msg not in found:
                found.append(msg)
            return
        log.log(record.levelno, "AutoAttack: %s", msg)


def _route_autoattack_log() -> None:
    """Send the 'auto-attack' logger to ours and nowhere else (never the terminal), at INFO and above."""
    aa = logging.getLogger(AA_LOGGER)
    if not any(isinstance(h, _Forward) for h in aa.handlers):
        aa.addHandler(_Forward())
    aa.propagate = False
    aa.setLevel(logging.INFO)  # its DEBUG lines are per-batch chatter; its warnings must never be filtered out


_route_autoattack_log()


class ReliableGrid(dict):
    """eps -> logits (N, K) float32 on the CPU, plus what the run said.

    `warnings[eps]`: AutoAttack's warnings at that eps (e.g. "there are 12 points with zero gradient!");
    `attacks`: the attacks run, in order; `adversarial[eps]`: the images (N, C, H, W) the logits are
    of, when asked for with keep_adv (points carried from a smaller eps hold that eps's image).
    """

    def __init__(self, attacks: tuple[str, ...]):
        super().__init__()
        self.attacks = attacks
        self.warnings: dict[float, list[str]] = {}
        self.adversarial: dict[float, torch.Tensor] = {}


class _Float32Logits(nn.Module):
    """The model as AutoAttack sees it: gradient passes under `attack_autocast` (bfloat16 where the
    hardware computes it natively), every output cast to float32; passes without gradients (AutoAttack's
    decisions whether a point is fooled) run in the model's own precision.
    """

    def __init__(self, model: nn.Module, device: torch.device):
        super().__init__()
        self.model, self.device = model, device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            with attack_autocast(self.device):
                return self.model(x).float()
        return self.model(x).float()


def attacks_for(method: str, n_classes: int) -> tuple[str, ...]:
    """The pyautoattack attacks a method runs on a model with `n_classes` outputs.

    APGD-T's targeted DLR loss reads the four largest logits, so models with fewer than 4 classes run
    without it; fewer than 2 outputs cannot be attacked at all.
    """
    if n_classes < 2:
        raise LogitscopeError(f"AutoAttack needs a classifier with at least 2 outputs, this model has {n_classes}: "
                              "check that it returns logits (N, K), one per class.")
    names = {"autoattack-fast": ("apgd-ce", "apgd-t"),
             "autoattack-standard": ("apgd-ce", "apgd-t", "fab-t", "square")}.get(method)
    if names is None:
        raise LogitscopeError(f"Attack method {method!r} is not AutoAttack: use autoattack-fast or autoattack-standard.")
    return tuple(a for a in names if a != "apgd-t" or n_classes >= 4)


def _autoattack(model: nn.Module, spec: AttackSpec, eps: float, attacks: tuple[str, ...], n_classes: int,
                device: torch.device):
    """A configured pyautoattack.AutoAttack: one start per attack, targets limited to the classes there are."""
    try:  # optional dependency: the hosted demo may be deployed without pyautoattack (see the README)
        from pyautoattack import AutoAttack
    except ImportError as exc:
        raise LogitscopeError("AutoAttack needs the pyautoattack package: pip install pyautoattack "
                              "(requirements.txt lists it).") from exc
    version = "standard" if spec.method == "autoattack-standard" else "custom"
    aa = AutoAttack(model, attacks=None if version == "standard" else list(attacks), device=device, eps=eps,
                    norm={"linf": "Linf", "l2": "L2"}[spec.norm], seed=spec.seed, version=version)
    aa.attacks_to_run = list(attacks)
    aa.verbose = False  # its progress lines; the checks' warnings are logged whatever this says
    targets = min(MAX_TARGETS, n_classes - 1)
    aa.apgd.n_restarts = 1  # the standard version's settings, which the custom version does not apply
    aa.apgd_targeted.n_restarts, aa.apgd_targeted.n_target_classes = 1, targets
    aa.fab.n_restarts, aa.fab.n_target_classes = 1, targets
    return aa


def _reset_dynamic_check() -> None:
    """pyautoattack's check for dynamic defenses counts calls in a module-level dict it never resets: once
    one model trips it, every later run would warn. Start each run from zero."""
    from pyautoattack import checks  # optional dependency, as in _autoattack (already imported by then)

    for name in checks.funcs:
        checks.funcs[name] = 0


def _logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The model's float32 logits (N, K) on x, on the CPU."""
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size]).float().cpu() for i in range(0, len(x), batch_size)])


def _check_cancel(cancel: Callable[[], bool] | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled("AutoAttack evaluation cancelled")


def _rng_devices(device: torch.device) -> list:
    """The devices whose random state `torch.random.fork_rng` must save: pyautoattack seeds the global one."""
    if device.type == "cuda":
        return [device.index if device.index is not None else torch.cuda.current_device()]
    return []


def reliable_grid(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec, eps_grid: Sequence[float],
                  batch_size: int, device: str | torch.device,
                  on_batch: Callable[[int, int], None] | None = None, cancel: Callable[[], bool] | None = None,
                  known: Mapping[float, torch.Tensor] | None = None, survivors_only: bool = True,
                  keep_adv: bool = False) -> ReliableGrid:
    """Logits (N, K) float32 of `model` on AutoAttack's adversarial examples at every eps of the grid (0 = clean).

    x: (N, C, H, W) in [0, 1]; y: (N,) labels. Epsilons run in increasing order on the survivors only: a
    point misclassified at a smaller eps (or clean) keeps that eps's logits, because its perturbation lies
    inside every larger ball, so robust accuracy never rises with eps and each eps attacks only the
    points still standing. `known` gives logits already computed (cached entries of this attack, or
    clean) at some epsilons: they are used as they are and their survivors carry on.
    `survivors_only=False` attacks every point at every eps instead (for comparison). Every run is
    seeded with spec.seed; the global random state is left as it was. The model's mode and weights are
    left untouched (set eval mode first). `cancel` is polled between batches and epsilons (raises
    Cancelled); `on_batch(done, total)` reports progress in units of one batch of the whole split per eps.
    """
    device = torch.device(device)
    if keep_adv and known:
        raise ValueError("keep_adv needs every eps computed here: the images behind `known` logits are unknown")
    grid = sorted({float(e) for e in eps_grid})
    known = {float(e): t.detach().float().cpu() for e, t in (known or {}).items()}
    x, y_cpu = x.detach().to(device), y.detach().cpu()
    _check_cancel(cancel)
    clean = known[0.0] if 0.0 in known else _logits(model, x, batch_size)
    attacks = attacks_for(spec.method, clean.shape[1])
    out = ReliableGrid(attacks)
    if 0.0 in grid:
        out[0.0], out.warnings[0.0] = clean, []
        if keep_adv:
            out.adversarial[0.0] = x.cpu().clone()
    steps = sorted(e for e in {*grid, *known} if 0 < e <= max(grid, default=0.0))
    per_eps, done = -(-len(x) // batch_size), 0
    total = per_eps * len([e for e in steps if e not in known])
    current, alive = clean, clean.argmax(1) == y_cpu
    adv_now = x.cpu().clone() if keep_adv else None  # a copy: x.cpu() of a CPU tensor is x itself
    wrapped = _Float32Logits(model, device)
    # FAB calls backward(), which adds into the parameters' .grad: put back what was there. (Turning
    # requires_grad off instead would save that work, but two runs on one model in two threads could then
    # leave it off for good.)
    grads = [p.grad for p in model.parameters()]
    try:
        for e in steps:
            _check_cancel(cancel)
            if e in known:
                current = torch.where(alive[:, None], known[e], current)
                alive = alive & (known[e].argmax(1) == y_cpu)
                if e in grid:
                    out[e], out.warnings[e] = known[e], []
                continue
            idx = alive.nonzero().squeeze(1) if survivors_only else torch.arange(len(x))
            logits = current.clone() if survivors_only else torch.empty_like(current)
            aa = _autoattack(wrapped, spec, e, attacks, clean.shape[1], device) if len(idx) else None
            _capture.warnings = found = []
            try:
                for j, start in enumerate(range(0, len(idx), batch_size)):
                    _check_cancel(cancel)
                    rows = idx[start:start + batch_size]
                    _reset_dynamic_check()
                    with torch.random.fork_rng(devices=_rng_devices(device)):
                        x_adv, _ = aa.run_standard_evaluation(x[rows.to(device)], y_cpu[rows].to(device),
                                                              batch_size=len(rows))
                    logits[rows] = _logits(model, x_adv, batch_size)  # float32, on the final examples
                    if keep_adv:
                        adv_now[rows] = x_adv.detach().cpu()
                    if on_batch is not None:
                        on_batch(done + j + 1, total)
            finally:
                _capture.warnings = None
            done += per_eps
            if on_batch is not None:
                on_batch(done, total)
            correct = logits.argmax(1) == y_cpu
            alive = alive & correct if survivors_only else correct
            current = logits
            if found:  # INFO: they reach the reader through the entry and the masking check, not the terminal
                log.info("AutoAttack at %s warned: %s", spec.at(e).describe(), " | ".join(found))
            if e in grid:
                out[e], out.warnings[e] = logits, found
                if keep_adv:
                    out.adversarial[e] = adv_now.clone()
    finally:
        for p, g in zip(model.parameters(), grads):
            p.grad = g
    return out
