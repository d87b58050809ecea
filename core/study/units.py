"""Units of a precompute and their files: one model at one epsilon (or one chunk of the split), and joining chunks.

On big splits (more than CHUNK_IMAGES images) a unit is one model at one epsilon on one chunk of images,
kept under cache/precompute/parts/ until the entry's last chunk is done and the chunks are joined.
Chunks start at multiples of the attack batch size and seed their random starts by absolute image index
(`attack_grid(first_index=...)`), so a joined entry is exactly what `core.engine.logits.get_grid`
computes in one pass. Chunks are for PGD only (see `attack_chunk`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from core.config import AttackSpec, DataSpec, cache_dir
from core.engine import logits as cache
from core.engine.attacks import attack_grid
from core.errors import LogitscopeError
from core.storage import atomic_write, verified
from core.study.recipes import Recipe

CHUNK_IMAGES = 1024  # images per unit on big splits: a few minutes of PGD-20 for a WideResNet on a CPU


@dataclass(frozen=True)
class Unit:
    """One model at one epsilon on images [start, stop) of the split; `chunks` units make its entry."""

    model: str
    key: str
    eps: float
    start: int
    stop: int
    chunks: int
    part: int = 0  # which chunk, 0-based
    kind: str = "pgd"  # "pgd": one entry (or chunk) of the PGD grid; "evidence": the model's evidence plan

    def describe(self) -> str:
        if self.kind == "evidence":
            return f"{self.model}: AutoAttack at eps {self.eps:g} and the masking check's attacks"
        where = "" if self.chunks == 1 else f", chunk {self.part + 1}/{self.chunks}"
        return f"{self.model} at eps {self.eps:g}{where}"




def _entry_attack(attack: AttackSpec, eps: float) -> AttackSpec | None:
    return None if eps == 0 else attack.at(eps)


def plan(recipes: Sequence[Recipe], grid: Sequence[float], n_images: int, batch_size: int,
         chunk_images: int = CHUNK_IMAGES) -> list[Unit]:
    """Every unit, model by model, epsilon by epsilon; chunks are whole attack batches."""
    chunk = max(batch_size, -(-chunk_images // batch_size) * batch_size)  # rounded up to whole batches
    bounds = [(0, n_images)] if n_images <= chunk else [(s, min(s + chunk, n_images))
                                                        for s in range(0, n_images, chunk)]
    return [Unit(r.name, r.key, float(e), s, t, len(bounds), i) for r in recipes for e in grid
            for i, (s, t) in enumerate(bounds)]


def part_path(unit: Unit, data: DataSpec, attack: AttackSpec) -> Path:
    """Where a finished chunk waits for its siblings."""
    a = _entry_attack(attack, unit.eps)
    name = f"{data.key()}-{'clean' if a is None else a.key()}"
    return cache_dir() / "precompute" / "parts" / unit.key / name / f"{unit.start}-{unit.stop}.safetensors"


def _check_part(path: Path, rows: int) -> None:
    """Raise unless the part loads as safetensors holding 'logits' (rows, K) and nothing else."""
    tensors = load_file(path)
    if set(tensors) != {"logits"} or tensors["logits"].ndim != 2 or tensors["logits"].shape[0] != rows:
        raise ValueError(f"it holds {({n: tuple(t.shape) for n, t in tensors.items()})}, "
                         f"not logits of its {rows} images")


def part_ok(unit: Unit, data: DataSpec, attack: AttackSpec) -> bool:
    """The chunk's part is on disk and intact (checked once per version of the file, then a stat)."""
    return verified(part_path(unit, data, attack), lambda p: _check_part(p, unit.stop - unit.start))


def is_done(unit: Unit, data: DataSpec, attack: AttackSpec) -> bool:
    """The unit's result is in the cache and passes its check: its entry, or (for a chunk) its part.

    A corrupt or truncated entry or part counts as missing (reported once), so it is computed again.
    """
    if cache.entry_ok(unit.key, data, _entry_attack(attack, unit.eps)):
        return True
    return unit.chunks > 1 and part_ok(unit, data, attack)


def _save_part(path: Path, logits: torch.Tensor) -> None:
    atomic_write(path, save({"logits": logits.contiguous()}))


def join(units: list[Unit], data: DataSpec, attack: AttackSpec, labels: torch.Tensor) -> bool:
    """Join the chunks of one (model, eps) into its cache entry once all are there; True if it did."""
    units = sorted(units, key=lambda u: u.start)
    if not all(part_ok(u, data, attack) for u in units):  # a broken part is computed again, then joined
        return False
    paths = [part_path(u, data, attack) for u in units]
    try:
        parts = [load_file(p)["logits"] for p in paths]
    except (SafetensorError, OSError, KeyError):  # a part broken by a crash mid-write: recompute it next run
        for p in paths:
            p.unlink(missing_ok=True)
        return False
    u = units[0]
    cache.put(u.key, data, _entry_attack(attack, u.eps), torch.cat(parts), labels)
    shutil.rmtree(paths[0].parent, ignore_errors=True)
    for folder in paths[0].parents[1:4]:  # <key>/, parts/, precompute/: removed when nothing else waits there
        try:
            folder.rmdir()
        except OSError:
            break
    return True


def attack_chunk(model: nn.Module, u: Unit, x: torch.Tensor, y: torch.Tensor, attack: AttackSpec, batch: int,
           on_batch: Callable[[int, int], None], data: DataSpec, device: str | torch.device) -> None:
    """Attack one chunk of images with PGD and keep it as a part (AutoAttack is refused: see the module docstring)."""
    if attack.reliable:
        raise LogitscopeError(f"{attack.describe()} cannot be computed chunk by chunk: it attacks the survivors "
                              "epsilon by epsilon and seeds each run per batch, so a chunk would not be a piece of "
                              "its whole-split entry. Compute it with evidence=True (`--evidence`), which runs it on "
                              "the whole split.")
    computed = attack_grid(model, x[u.start:u.stop].to(device), y[u.start:u.stop].to(device), attack,
                           [u.eps], batch_size=batch, on_batch=on_batch, first_index=u.start)
    _save_part(part_path(u, data, attack), computed[u.eps])
