"""The logits cache: every model's logits on a data split, clean and under attack, computed once.

An entry is one safetensors file (no pickle: safe to share) named by the model's key, the data
spec's key and the attack spec's key at that epsilon; its metadata repeats the specs in JSON, with
the format version and a sha256 checksum of the tensors. Writes are atomic (write aside, then
rename) and guarded by a file lock, so two processes asking for the same entry compute it once.
Every read checks format, shapes, checksum and specs; a file that fails is reported once (a log
warning) and recomputed. See core.storage.

The attack is PGD (core.engine.attacks) or AutoAttack (core.engine.reliable), as `attack.method` says;
their entries have distinct names (the attack's key) and the same files, locks and checks. An
AutoAttack entry's metadata also holds the attacks it ran and AutoAttack's warnings at that eps
(`LogitsRecord.warnings`), which the gradient-masking check reads (core.engine.masking).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from core.config import AttackSpec, DataSpec, cache_dir
from core.engine.attacks import attack_grid
from core.engine.data import load_dataset
from core.engine.reliable import reliable_grid
from core.storage import atomic_write, cache_lock, digest, report_corrupt, safe_part, verified

log = logging.getLogger(__name__)
FORMAT = "logitscope-logits/2"  # /2 adds the sha256 checksum of the tensors to the metadata
READABLE = (FORMAT, "logitscope-logits/1")  # /1 entries (no checksum) are still read, after the other checks
ModelSource = nn.Module | Callable[[], nn.Module]  # a model, or a loader called only on a cache miss


@dataclass(frozen=True)
class LogitsRecord:
    """Logits (N, K) of one model on one data split at one epsilon (0 = clean), with labels (N,)."""

    logits: torch.Tensor
    labels: torch.Tensor
    model_key: str
    data: DataSpec
    attack: AttackSpec | None  # None for clean inputs
    path: Path
    warnings: tuple[str, ...] = ()  # what AutoAttack warned about at this eps (always empty for PGD and clean)

    @property
    def eps(self) -> float:
        return 0.0 if self.attack is None else self.attack.eps


def entry_path(model_key: str, data: DataSpec, attack: AttackSpec | None) -> Path:
    """Where an entry lives. Clean logits do not depend on the attack, so they share one name."""
    attack_key = "clean" if attack is None or attack.eps == 0 else attack.key()
    return cache_dir() / "logits" / safe_part(model_key, "Model key") / f"{data.key()}-{attack_key}.safetensors"


def _load_checked(path: Path, model_key: str, data: DataSpec, attack: AttackSpec | None) -> dict[str, torch.Tensor]:
    """The entry's tensors after every check: format, names, shapes, checksum and the specs it was made for.

    Raises ValueError (or the reader's own error) on the first problem.
    """
    return _load_entry(path, model_key, data, attack)[0]


def _load_entry(path: Path, model_key: str, data: DataSpec,
                attack: AttackSpec | None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of the entry, after every check of `_load_checked`."""
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        names = set(f.keys())
        if meta.get("format") not in READABLE:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
        if names != {"logits", "labels"}:
            raise ValueError(f"tensors {sorted(names)}, expected logits and labels")
        tensors = {n: f.get_tensor(n) for n in names}
    logits, labels = tensors["logits"], tensors["labels"]
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"shapes {tuple(logits.shape)} and {tuple(labels.shape)} do not match")
    if meta["format"] == FORMAT and meta.get("sha256") != digest(tensors):
        raise ValueError("checksum mismatch: the file changed after it was written")
    stored_attack = json.loads(meta.get("attack", "null"))
    if stored_attack is not None and stored_attack.get("eps") == 0:
        stored_attack = None
    wanted_attack = None if attack is None or attack.eps == 0 else attack.to_dict()
    if meta.get("model") != model_key or json.loads(meta.get("data", "null")) != data.to_dict() \
            or stored_attack != wanted_attack:
        raise ValueError("it holds the logits of another model, data split or attack")
    warnings = json.loads(meta.get("warnings", "[]"))
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise ValueError("its AutoAttack warnings are not a list of strings")
    return tensors, meta


def _read(path: Path, model_key: str, data: DataSpec, attack: AttackSpec | None) -> LogitsRecord | None:
    """The entry if it is present and passes every check; None (reported once) if it must be recomputed."""
    if not path.is_file():
        return None
    try:
        tensors, meta = _load_entry(path, model_key, data, attack)
    except (SafetensorError, OSError, KeyError, ValueError, TypeError, AttributeError, RuntimeError) as exc:
        report_corrupt(path, exc)
        return None
    warnings = tuple(json.loads(meta.get("warnings", "[]")))
    return LogitsRecord(tensors["logits"], tensors["labels"], model_key, data, attack, path, warnings)


def entry_ok(model_key: str, data: DataSpec, attack: AttackSpec | None) -> bool:
    """True if the entry is cached and valid. Checked once per version of the file, then a stat."""
    return verified(entry_path(model_key, data, attack), lambda p: _load_checked(p, model_key, data, attack))


def _write(path: Path, rec_logits: torch.Tensor, labels: torch.Tensor, model_key: str, data: DataSpec,
           attack: AttackSpec | None, extra: dict[str, list[str]] | None = None) -> None:
    """Write one entry atomically, with its specs and the checksum of its tensors in the metadata.

    `extra` (AutoAttack entries only: "attacks" run and "warnings") is stored as JSON beside them.
    """
    tensors = {"logits": rec_logits.detach().cpu().contiguous(), "labels": labels.detach().cpu().contiguous()}
    meta = {"format": FORMAT, "model": model_key, "data": json.dumps(data.to_dict()),
            "attack": json.dumps(None if attack is None else attack.to_dict()), "sha256": digest(tensors)}
    meta.update({k: json.dumps(list(v)) for k, v in (extra or {}).items()})
    atomic_write(path, save(tensors, metadata=meta))


RELIABLE_BATCHES = 4  # AutoAttack's batches hold this many PGD batches: its ~1000 gradient passes per batch
                      # amortise better over more images (1.2x faster with all 360 digits images in one batch
                      # than with 128 per batch, one CPU core), and cancelling still stops within seconds


def eval_batch_size(image_shape: Sequence[int], device: str | torch.device = "cpu") -> int:
    """Images per attack batch: ~8k input values on a CPU (64x that on a GPU), between 8 and 512.

    On a CPU smaller batches are faster per image, because a batch's activations then stay in the
    cache: PGD on the digits CNN runs at ~39k image-steps/s with 128 images (x the epsilons of the
    grid) against ~29k with 512. A GPU wants large batches to fill it.
    It depends only on the image size and the device, never on the epsilon grid, so cached
    results do not change with the grid they were computed in.
    """
    numel = max(1, int(torch.tensor(image_shape).prod()))
    budget = 2 ** 13 * (64 if torch.device(device).type == "cuda" else 1)
    return int(min(512, max(8, budget // numel)))


def entry_lock(model_key: str, data: DataSpec, cancel: Callable[[], bool] | None = None):
    """The lock that every writer of this model's entries on this data split holds (context manager).

    One lock per (model, data split), whatever the attack: clean logits are shared by all attacks,
    and the same entry can be asked for under differently-written attack specs (eps set or not).
    """
    return cache_lock(cache_dir() / "logits" / safe_part(model_key, "Model key") / f".{data.key()}.lock", cancel)


def get_grid(model: ModelSource, model_key: str, data: DataSpec, attack: AttackSpec, eps_grid: Sequence[float],
             device: str | torch.device = "cpu", on_batch: Callable[[int, int], None] | None = None,
             data_dir: str | None = None, cancel: Callable[[], bool] | None = None) -> dict[float, LogitsRecord]:
    """Records for every eps of the grid (0 = clean); missing entries are computed in one batched pass.

    Two processes or threads asking for the same missing entries compute them once: the second waits
    for the entry lock, then reads what the first wrote. `cancel` stops that wait (raises Cancelled).
    """
    specs = {float(e): (None if float(e) == 0 else attack.at(float(e))) for e in eps_grid}
    paths = {e: entry_path(model_key, data, a) for e, a in specs.items()}
    out = {e: _read(paths[e], model_key, data, specs[e]) for e in specs}
    missing = [e for e, r in out.items() if r is None]
    if not missing:
        return out
    with entry_lock(model_key, data, cancel):
        for e in missing:  # another process may have written them while we waited for the lock
            out[e] = _read(paths[e], model_key, data, specs[e])
        missing = [e for e, r in out.items() if r is None]
        if not missing:
            return out
        net = model if isinstance(model, nn.Module) else model()
        x, y = load_dataset(data.name, data_dir).split(data)
        known = {e: r.logits for e, r in out.items() if r is not None}
        computed, attacks = _compute(net, x, y, attack, missing, known, device, on_batch, cancel)
        for e in missing:
            logits, warnings = computed[e]
            extra = {"attacks": attacks, "warnings": warnings} if specs[e] is not None and attack.reliable else None
            _write(paths[e], logits, y.cpu(), model_key, data, specs[e], extra)
            out[e] = LogitsRecord(logits, y.cpu(), model_key, data, specs[e], paths[e], tuple(warnings))
    return out


def _compute(net: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: AttackSpec, eps: list[float],
             known: dict[float, torch.Tensor], device: str | torch.device,
             on_batch: Callable[[int, int], None] | None,
             cancel: Callable[[], bool] | None) -> tuple[dict[float, tuple[torch.Tensor, list[str]]], tuple[str, ...]]:
    """({eps: (logits (N, K), AutoAttack's warnings)}, the AutoAttack attacks run) of the missing entries,
    by the attack's method, with the model in eval mode (restored after).

    PGD attacks each eps on its own; AutoAttack runs the epsilons in order on the survivors, continuing
    from the entries already cached (`known`).
    """
    training = net.training
    net.eval()
    batch = eval_batch_size(x.shape[1:], device)
    try:
        if attack.reliable:
            grid = reliable_grid(net, x, y, attack, eps, RELIABLE_BATCHES * batch, device, on_batch, cancel, known)
            return {e: (grid[e], grid.warnings[e]) for e in eps}, grid.attacks
        grid = attack_grid(net, x.to(device), y.to(device), attack, eps, batch_size=batch, on_batch=on_batch)
        return {e: (grid[e], []) for e in eps}, ()
    finally:
        net.train(training)


def get_or_compute(model: ModelSource, model_key: str, data: DataSpec, attack: AttackSpec | None = None,
                   device: str | torch.device = "cpu", data_dir: str | None = None) -> LogitsRecord:
    """The record of one model on one data split, clean (attack None) or under `attack`."""
    attack = attack or AttackSpec(eps=0.0)
    return get_grid(model, model_key, data, attack, [attack.eps], device, data_dir=data_dir)[float(attack.eps)]


def put(model_key: str, data: DataSpec, attack: AttackSpec | None, logits: torch.Tensor,
        labels: torch.Tensor, warnings: Sequence[str] = (), attacks: Sequence[str] = ()) -> LogitsRecord:
    """Store logits (N, K) and labels (N,) computed elsewhere (e.g. chunk by chunk) as one cache entry.

    An AutoAttack entry also takes the attacks run and AutoAttack's warnings (`ReliableGrid.attacks`,
    `.warnings[eps]`).
    """
    path = entry_path(model_key, data, attack)
    extra = {"attacks": attacks, "warnings": warnings} if attack and attack.eps and attack.reliable else None
    _write(path, logits, labels, model_key, data, attack, extra)
    return LogitsRecord(logits, labels, model_key, data, attack, path, tuple(warnings))


def read(model_key: str, data: DataSpec, attack: AttackSpec | None) -> LogitsRecord | None:
    """The cached entry, or None when it is missing or unreadable (never computes)."""
    return _read(entry_path(model_key, data, attack), model_key, data, attack)
