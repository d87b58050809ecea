"""The logits cache: every model's logits on a data split, clean and under PGD, computed once.

An entry is one safetensors file (no pickle: safe to share) named by the model's key, the data
spec's key and the attack spec's key at that epsilon; its metadata repeats the specs in JSON.
Writes are atomic (write aside, then rename) and guarded by a file lock, so two processes asking
for the same entry compute it once. A file that fails to load is treated as missing and recomputed.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from filelock import FileLock
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from core.attacks import attack_grid
from core.config import AttackSpec, DataSpec, cache_dir
from core.data import load_dataset
from core.errors import LogitscopeError

log = logging.getLogger(__name__)
FORMAT = "logitscope-logits/1"
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

    @property
    def eps(self) -> float:
        return 0.0 if self.attack is None else self.attack.eps


def entry_path(model_key: str, data: DataSpec, attack: AttackSpec | None) -> Path:
    """Where an entry lives. Clean logits do not depend on the attack, so they share one name."""
    attack_key = "clean" if attack is None or attack.eps == 0 else attack.key()
    return cache_dir() / "logits" / model_key / f"{data.key()}-{attack_key}.safetensors"


def _read(path: Path, model_key: str, data: DataSpec, attack: AttackSpec | None) -> LogitsRecord | None:
    if not path.is_file():
        return None
    try:
        tensors = load_file(path)
        logits, labels = tensors["logits"], tensors["labels"]
        if logits.ndim != 2 or labels.shape != (logits.shape[0],):
            raise ValueError(f"shapes {tuple(logits.shape)} and {tuple(labels.shape)} do not match")
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        log.warning("Cache entry %s is unreadable (%s); recomputing it.", path, exc)
        return None
    return LogitsRecord(logits, labels, model_key, data, attack, path)


def _write(path: Path, rec_logits: torch.Tensor, labels: torch.Tensor, model_key: str, data: DataSpec,
           attack: AttackSpec | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "model": model_key, "data": json.dumps(data.to_dict()),
            "attack": json.dumps(None if attack is None else attack.to_dict())}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".safetensors")
    os.close(fd)
    try:
        save_file({"logits": rec_logits.contiguous(), "labels": labels.contiguous()}, tmp, metadata=meta)
        os.replace(tmp, path)
    except OSError as exc:
        raise LogitscopeError(f"Cannot write to the cache at {path.parent} ({exc.strerror}): free disk space "
                              "or point LOGITSCOPE_CACHE to a writable folder.") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def eval_batch_size(image_shape: Sequence[int], device: str | torch.device = "cpu") -> int:
    """Images per attack batch: ~64k input values on a CPU (8x on a GPU), between 16 and 512.

    It depends only on the image size and the device, never on the epsilon grid, so cached
    results do not change with the grid they were computed in.
    """
    numel = max(1, int(torch.tensor(image_shape).prod()))
    budget = 2 ** 16 * (8 if torch.device(device).type == "cuda" else 1)
    return int(min(512, max(16, budget // numel)))


def get_grid(model: ModelSource, model_key: str, data: DataSpec, attack: AttackSpec, eps_grid: Sequence[float],
             device: str | torch.device = "cpu", on_batch: Callable[[int, int], None] | None = None,
             data_dir: str | None = None) -> dict[float, LogitsRecord]:
    """Records for every eps of the grid (0 = clean); missing entries are computed in one batched pass."""
    specs = {float(e): (None if float(e) == 0 else attack.at(float(e))) for e in eps_grid}
    paths = {e: entry_path(model_key, data, a) for e, a in specs.items()}
    out = {e: _read(paths[e], model_key, data, specs[e]) for e in specs}
    missing = [e for e, r in out.items() if r is None]
    if not missing:
        return out
    lock_path = cache_dir() / "logits" / model_key / f".{data.key()}-{attack.key()}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_path):
        for e in missing:  # another process may have written them while we waited for the lock
            out[e] = _read(paths[e], model_key, data, specs[e])
        missing = [e for e, r in out.items() if r is None]
        if not missing:
            return out
        net = model if isinstance(model, nn.Module) else model()
        x, y = load_dataset(data.name, data_dir).split(data)
        training = net.training
        net.eval()
        try:
            computed = attack_grid(net, x.to(device), y.to(device), attack, missing,
                                   batch_size=eval_batch_size(x.shape[1:], device), on_batch=on_batch)
        finally:
            net.train(training)
        for e in missing:
            _write(paths[e], computed[e], y.cpu(), model_key, data, specs[e])
            out[e] = LogitsRecord(computed[e], y.cpu(), model_key, data, specs[e], paths[e])
    return out


def get_or_compute(model: ModelSource, model_key: str, data: DataSpec, attack: AttackSpec | None = None,
                   device: str | torch.device = "cpu", data_dir: str | None = None) -> LogitsRecord:
    """The record of one model on one data split, clean (attack None) or under `attack`."""
    attack = attack or AttackSpec(eps=0.0)
    return get_grid(model, model_key, data, attack, [attack.eps], device, data_dir=data_dir)[float(attack.eps)]
