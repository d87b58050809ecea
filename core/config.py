"""Frozen specifications. Every cache entry is named by `spec.key()`, a stable short hash.

A spec says *what* to compute, never *where* (device) or *how fast* (threads): two runs with equal
specs produce interchangeable results, so they share one cache entry.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import ClassVar

from core.errors import LogitscopeError

KEY_LENGTH = 12  # hex digits: 48 bits, collisions are not a concern at our scale


def stable_key(obj: object) -> str:
    """A short hash of a JSON-able object; identical across processes and platforms."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


class _Spec:
    """Mixin for frozen dataclasses: `key()`, `to_dict()`, `from_dict()`.

    `ADDED_FIELDS` maps each field added after keys of the spec were published to its default: a field
    at that default is left out of `to_dict()` (so of the key), so every spec written before it existed
    keeps its key and its cache entries, and `from_dict` fills it in when a stored dict lacks it.
    """

    ADDED_FIELDS: ClassVar[dict[str, object]] = {}

    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in self.ADDED_FIELDS and v == self.ADDED_FIELDS[f.name]:
                continue
            out[f.name] = v.to_dict() if isinstance(v, _Spec) else copy.deepcopy(v)
        return out

    def _floats(self) -> None:
        """Store ints given for float fields as floats: equal specs (1 == 1.0) must share one key."""
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("float", "float | None") and isinstance(v, int) and not isinstance(v, bool):
                object.__setattr__(self, f.name, float(v))

    def key(self) -> str:
        return stable_key({"type": type(self).__name__, **self.to_dict()})

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise LogitscopeError(f"{cls.__name__}: unknown fields {sorted(unknown)}; expected {sorted(names)}.")
        kwargs = {**cls.ADDED_FIELDS, **d}
        for f in fields(cls):
            sub = _NESTED.get((cls.__name__, f.name))
            if sub is not None and isinstance(kwargs.get(f.name), dict):
                kwargs[f.name] = sub.from_dict(kwargs[f.name])
            if isinstance(kwargs.get(f.name), list):
                kwargs[f.name] = tuple(kwargs[f.name])
        return cls(**kwargs)


def with_clean(eps) -> tuple[float, ...]:
    """An epsilon grid as evaluated: the values as floats, sorted, without repeats, with 0 (clean) added."""
    return tuple(sorted({0.0, *(float(e) for e in eps)}))


@dataclass(frozen=True)
class DataSpec(_Spec):
    """A dataset and one of its splits ("train" or "test"); `limit` keeps the first n samples."""

    name: str = "digits"
    split: str = "test"
    limit: int | None = None

    def __post_init__(self):
        if self.split not in ("train", "test"):
            raise LogitscopeError(f"Unknown split {self.split!r}: use 'train' or 'test'.")
        if self.limit is not None and self.limit < 1:
            raise LogitscopeError(f"limit must be a positive number of samples, got {self.limit}.")


AA_ITERATIONS = 100  # AutoAttack's APGD, APGD-T and FAB-T run a fixed 100 iterations (Croce & Hein 2020)
ATTACK_METHODS = {  # method -> how describe() names it
    "pgd": "PGD",
    "autoattack-fast": "AutoAttack (APGD-CE + APGD-T, 100 iterations)",
    "autoattack-standard": "AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square)",
}


@dataclass(frozen=True)
class AttackSpec(_Spec):
    """An attack: PGD (Madry et al. 2018) or AutoAttack (Croce & Hein 2020). `step_size=None` means 2.5 * eps / steps.

    eps is in input units ([0, 1] pixels): Linf 0.1 allows each pixel to move by 0.1.
    `method` is "pgd" (the project's PGD loop: steps, step_size, restarts, loss and random_start apply),
    "autoattack-fast" (AutoAttack's APGD-CE + APGD-T) or "autoattack-standard" (AutoAttack's standard
    version: APGD-CE, APGD-T, FAB-T, Square), both through `pyautoattack` (core.engine.reliable). For
    AutoAttack, `steps` must be its fixed 100 iterations and the PGD-only fields are ignored; only
    norm, eps and seed count.
    """

    ADDED_FIELDS: ClassVar[dict[str, object]] = {"method": "pgd"}  # keys before "method" existed stay valid

    norm: str = "linf"
    eps: float = 0.1
    steps: int = 20
    step_size: float | None = None
    restarts: int = 1
    loss: str = "ce"  # "ce" (cross-entropy) or "margin" (Carlini-Wagner margin on logits)
    random_start: bool = True
    seed: int = 0
    method: str = "pgd"

    def __post_init__(self):
        self._floats()
        check_eps(self.eps, self.norm)
        if self.method not in ATTACK_METHODS:
            raise LogitscopeError(f"Unknown attack method {self.method!r}: use one of {', '.join(ATTACK_METHODS)}.")
        if self.loss not in ("ce", "margin"):
            raise LogitscopeError(f"Unknown attack loss {self.loss!r}: use 'ce' or 'margin'.")
        if not 0 <= self.steps <= 10_000:
            raise LogitscopeError(f"steps must be between 0 and 10000, got {self.steps}.")
        if self.reliable and self.steps != AA_ITERATIONS:
            raise LogitscopeError(f"AutoAttack runs a fixed {AA_ITERATIONS} iterations, got steps={self.steps}: "
                                  f"set steps={AA_ITERATIONS} (core.study.hyper.reliable_attack does).")
        if self.restarts < 1:
            raise LogitscopeError(f"restarts must be at least 1, got {self.restarts}.")
        if self.step_size is not None and not (math.isfinite(self.step_size) and self.step_size > 0):
            raise LogitscopeError(f"step_size must be a positive number, got {self.step_size}.")

    @property
    def reliable(self) -> bool:
        """True for AutoAttack, the attack a robust accuracy must come from; False for PGD."""
        return self.method != "pgd"

    @property
    def alpha(self) -> float:
        """The step size actually used."""
        if self.step_size is not None:
            return self.step_size
        return 2.5 * self.eps / max(self.steps, 1)

    def at(self, eps: float) -> "AttackSpec":
        """The same attack at another epsilon (the step size follows eps unless it was fixed)."""
        return replace(self, eps=float(eps))

    def describe(self) -> str:
        """The attack named in full for a reader, e.g. "Linf PGD-20 (CE loss, 1 start), eps 0.1".

        The eps is left out when it is 0, the placeholder of a spec that is set per grid point.
        """
        norm = {"linf": "Linf", "l2": "L2"}[self.norm]
        if self.reliable:
            text = f"{norm} {ATTACK_METHODS[self.method]}"
        else:
            starts = f"{self.restarts} {'start' if self.restarts == 1 else 'starts'}"
            if not self.random_start:
                starts = "no random start" if self.restarts == 1 else f"{starts}, no random start"
            details = [f"{'CE' if self.loss == 'ce' else 'margin'} loss", starts]
            if self.step_size is not None:
                details.append(f"step {self.step_size:.4g}")
            text = f"{norm} PGD-{self.steps} ({', '.join(details)})"
        return text if self.eps == 0 else f"{text}, eps {self.eps:.4g}"


NORMS = ("linf", "l2")


def check_eps(eps: float, norm: str) -> None:
    """Raise LogitscopeError unless eps is a sensible budget for the norm on [0, 1] inputs."""
    if norm not in NORMS:
        raise LogitscopeError(f"Unknown norm {norm!r}: use one of {', '.join(NORMS)}.")
    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise LogitscopeError(f"epsilon must be a non-negative number, got {eps!r}.")
    if norm == "linf" and eps > 1:
        raise LogitscopeError(f"Linf epsilon {eps} exceeds the [0, 1] input range: use a value in [0, 1].")
    if norm == "l2" and eps > 100:
        raise LogitscopeError(f"L2 epsilon {eps} is beyond any image's size: use a value below 100.")


@dataclass(frozen=True)
class DistillSpec(_Spec):
    """Distillation from a teacher's clean logits on the training split.

    `teacher` is the key of the teacher's ModelSpec; `manipulation` a name from
    `core.engine.distill.MANIPULATIONS`; `fraction` the share of samples whose teacher logits are
    manipulated; `hard_weight` the weight of cross-entropy on the true labels.
    """

    teacher: str = ""
    manipulation: str = "none"
    temperature: float = 4.0
    hard_weight: float = 0.0
    fraction: float = 1.0

    def __post_init__(self):
        self._floats()
        if not self.teacher:
            raise LogitscopeError("Distillation needs a teacher: give the teacher model's key.")
        if not (math.isfinite(self.temperature) and 0.05 <= self.temperature <= 100):
            raise LogitscopeError(f"temperature must be between 0.05 and 100, got {self.temperature}.")
        if not 0 <= self.hard_weight <= 1:
            raise LogitscopeError(f"hard_weight must be in [0, 1], got {self.hard_weight}.")
        if not 0 <= self.fraction <= 1:
            raise LogitscopeError(f"fraction must be in [0, 1], got {self.fraction}.")


@dataclass(frozen=True)
class TrainSpec(_Spec):
    """One training run: "standard", "pgd" (PGD-AT), "fgsm" (fast AT), "trades" or "distill".

    `attack` is the training-time attack for "pgd", "fgsm" and "trades" (for "fgsm" only its norm,
    eps and loss count); `distill` is set for "distill". `train_limit` trains on the first n samples
    of the training split only (None: all of them), which keeps large datasets feasible on a CPU.
    """

    method: str = "standard"
    epochs: int = 12
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    seed: int = 0
    attack: AttackSpec | None = None
    trades_beta: float = 6.0
    distill: DistillSpec | None = None
    train_limit: int | None = None

    def __post_init__(self):
        self._floats()
        if self.method not in TRAIN_METHODS:
            raise LogitscopeError(f"Unknown training method {self.method!r}: use one of {', '.join(TRAIN_METHODS)}.")
        if self.method in ("pgd", "fgsm", "trades") and self.attack is None:
            raise LogitscopeError(f"Training method {self.method!r} needs an attack specification.")
        if self.attack is not None and self.attack.reliable:
            raise LogitscopeError(f"Training uses PGD; {self.attack.method} is an evaluation attack. Train with "
                                  "method 'pgd' in the attack specification.")
        if self.method == "distill" and self.distill is None:
            raise LogitscopeError("Training method 'distill' needs a distillation specification.")
        if not 1 <= self.epochs <= 10_000:
            raise LogitscopeError(f"epochs must be between 1 and 10000, got {self.epochs}.")
        if not 1 <= self.batch_size <= 65_536:
            raise LogitscopeError(f"batch_size must be between 1 and 65536, got {self.batch_size}.")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise LogitscopeError(f"lr must be a positive number, got {self.lr}.")
        if self.seed < 0:
            raise LogitscopeError(f"seed must be a non-negative integer, got {self.seed}.")
        if self.train_limit is not None and self.train_limit < 1:
            raise LogitscopeError(f"train_limit must be a positive number of samples or None, got {self.train_limit}.")


TRAIN_METHODS = ("standard", "pgd", "fgsm", "trades", "distill")


@dataclass(frozen=True)
class ModelSpec(_Spec):
    """A model to train: architecture, the dataset it learns, and how it is trained."""

    arch: str = "digits_cnn"
    dataset: str = "digits"
    train: TrainSpec = field(default_factory=TrainSpec)


_NESTED = {
    ("TrainSpec", "attack"): AttackSpec,
    ("TrainSpec", "distill"): DistillSpec,
    ("ModelSpec", "train"): TrainSpec,
}


def cache_dir() -> Path:
    """Root of everything regenerable. `LOGITSCOPE_CACHE` overrides the default `./cache`."""
    root = Path(os.environ.get("LOGITSCOPE_CACHE", Path(__file__).resolve().parent.parent / "cache"))
    return root


DEMO_ENV = "LOGITSCOPE_DEMO"  # the bundle the hosted demo serves (core.app.demo)


def demo_mode() -> bool:
    """True when the app serves a bundle as the hosted demo (LOGITSCOPE_DEMO is set).

    A setting, read here so that every layer can ask it without importing the demo itself.
    """
    return bool(os.environ.get(DEMO_ENV))


def data_roots() -> list[Path]:
    """The folders the app may read your own data from when a path comes from a link or a form.

    `LOGITSCOPE_DATA` lists them (separated by os.pathsep, e.g. "/data:/home/me/images"); unset, it is
    the folder the app was started in. The cache folder is always one. The command line is not
    limited: a path typed in a terminal is the user's own choice, not a link's.
    """
    raw = os.environ.get("LOGITSCOPE_DATA", "")
    roots = [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()] or [Path.cwd()]
    return [r.resolve() for r in (*roots, cache_dir())]


def inside_data_roots(path: str | Path) -> Path:
    """`path` with symlinks and '..' resolved, if it lies in one of `data_roots()`; else LogitscopeError."""
    try:
        resolved = Path(path).expanduser().resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, an unknown ~user, a symlink loop
        raise LogitscopeError(f"{str(path)[:200]!r} is not a usable path ({exc}): give a file or folder path.") from exc
    roots = data_roots()
    if not any(resolved == r or resolved.is_relative_to(r) for r in roots):
        raise LogitscopeError(f"{path} is outside the folders the app may read ({', '.join(map(str, roots))}): "
                              "move your data under one of them, or start the app with LOGITSCOPE_DATA set to "
                              "its folder.")
    return resolved
