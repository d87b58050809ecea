"""Writing portable bundles: what the app's pages need for one dataset, in one verified zip file.

`python -m core bundle --dataset digits --out digits.zip` packs, from the cache, the chosen models'
logits over the grid, their checkpoints (up to MAX_CHECKPOINT_MB), the lab's teachers and run table,
the evaluation images, per-sample statistics and the default UMAP maps; `core.app.bundle_check` says
what each member is and `core.app.bundle_read` opens a bundle (`extract` turns it into a cache folder).

Writing repairs before it packs: a corrupt or missing checkpoint is trained again and a corrupt or
missing logits entry recomputed (`_bring_up_to_date`), or the bundle is refused saying which model
and why; lab runs are models like the others (a run whose checkpoint is corrupt is trained again,
never left out). Then every checkpoint and logits entry is read once, those bytes are checked by the
cache's own checks, and exactly those bytes are packed (`core.app.bundle_pack`).
"""

from __future__ import annotations

import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from core.app import embedding, lab, views
from core.app.bundle_check import FORMAT, LIVE_TRAIN_VALUES, SCALES, VERSION
from core.app.bundle_pack import Packer
from core.app.prepare import logits_cached
from core.config import AttackSpec, DataSpec, cache_dir
from core.engine.data import load_dataset
from core.engine.logits import _load_checked, entry_ok, entry_path, get_grid, get_or_compute
from core.engine.models import load_checkpoint
from core.engine.zoo import find_entry, model_dir
from core.errors import LogitscopeError
from core.storage import atomic_write
from core.study import evidence
from core.study.hyper import eps_grid, eval_attack, eval_data, hyper
from core.study.recipes import (
    Recipe,
    checkpoint_path,
    ensure_model,
    evaluated_zoo,
    is_trained,
    model_source,
    teacher_recipes,
)

MAX_CHECKPOINT_MB = 25      # bigger checkpoints (PreAct ResNet-18: 45 MB) stay out; their pages show logits only
MAP_MODELS, MAP_NEIGHBOURS = ("standard", "pgd-at"), 15  # the sidebar's and the embedding page's defaults
Progress = Callable[[str, float], None]  # (what runs now, fraction of it done), e.g. the CLI's tqdm bar


@dataclass(frozen=True)
class Written:
    path: Path
    manifest: dict
    bytes: int


def _catalog(dataset: str) -> dict[str, Recipe]:
    """The models a bundle may hold: the app's catalog with every recorded lab run, also those whose
    checkpoint is missing or corrupt (the model pickers leave those out; the writer trains them again)."""
    return views.catalog(dataset, extra=lab.run_recipes(dataset, trained=False))


def _at(attack: AttackSpec, e: float) -> AttackSpec | None:
    return None if float(e) == 0 else attack.at(float(e))


def _evaluated(r: Recipe, data: DataSpec, attack: AttackSpec, grid: Sequence[float]) -> bool:
    """The cache holds some of the model's logits under this attack, intact or not (clean ones are shared by
    every attack, so they count only for a grid without attacked points). Broken ones are repaired."""
    points = [e for e in grid if float(e) != 0] or list(grid)
    return any(entry_path(r.key, data, _at(attack, e)).is_file() for e in points)


def choose(dataset: str, names: str | Sequence[str], data: DataSpec, attack, grid) -> list[Recipe]:
    """The named models of the dataset's catalog ("all": every one the cache holds logits of, under `attack`).

    A model whose entries are corrupt or partly missing is chosen all the same: `write_bundle` repairs it.
    """
    catalog = _catalog(dataset)
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if list(names) == ["all"]:
        ready = [r for r in catalog.values() if _evaluated(r, data, attack, grid)]
        if not ready:
            raise LogitscopeError(f"No {dataset} model has logits for {attack.norm} PGD-{attack.steps} over the grid "
                                  f"in {cache_dir()}: run python -m core precompute --dataset {dataset} first.")
        return ready
    unknown = [n for n in names if n not in catalog]
    if unknown:
        raise LogitscopeError(f"Unknown model(s) {', '.join(unknown)}: choose from {', '.join(catalog)}, or all.")
    missing = [n for n in names if not _evaluated(catalog[n], data, attack, grid)]
    if missing:
        raise LogitscopeError(f"The logits of {', '.join(missing)} are not cached for {attack.norm} PGD-{attack.steps}: "
                              f"run python -m core precompute --dataset {dataset} --models {','.join(missing)} first.")
    return [catalog[n] for n in names]


def _images(x: torch.Tensor) -> dict[str, np.ndarray]:
    """float images -> {"q": uint8 codes, "scale"} when exact, else {"x": float32}."""
    x = x.numpy()
    for s in SCALES:
        q = np.round(x * s)
        if q.min() >= 0 and q.max() <= 255 and np.array_equal(q.astype(np.uint8).astype(np.float32) / np.float32(s), x):
            return {"q": q.astype(np.uint8), "scale": np.array(s, dtype=np.int64)}
    return {"x": x.astype(np.float32)}


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _model_entry(r: Recipe, shown: bool, checkpoint: str | None) -> dict:
    entry = {"name": r.name, "role": r.role, "key": r.key, "shown": shown, "checkpoint": checkpoint,
             "teacher": r.teacher.name if r.teacher else None}
    if r.zoo is not None:
        entry["zoo"] = list(r.zoo)
    else:
        entry["spec"] = r.spec.to_dict()
    return entry


def _maps(shown: Sequence[Recipe], data: DataSpec, attack, grid, data_dir: str | None) -> list[Path]:
    """The embedding page's default maps (standard and PGD-AT, 15 neighbours, every epsilon), computed if missing."""
    pair = {r.name: r for r in shown if r.name in MAP_MODELS}
    if len(pair) < len(MAP_MODELS):
        return []
    logit_set = views.load_logit_set({n: pair[n] for n in MAP_MODELS}, data, attack, grid, data_dir)
    paths = []
    for e in grid:
        if embedding.cached_embedding(logit_set, e, MAP_NEIGHBOURS) is None:
            embedding.compute_embedding(logit_set, e, MAP_NEIGHBOURS)
        paths.append(embedding.embedding_path(embedding.embedding_key(logit_set, e, MAP_NEIGHBOURS, 0.1, 0)))
    return paths


def _packs_checkpoint(r: Recipe) -> bool:
    """A local model whose checkpoint goes into the bundle: present and under the cap, or missing (trained first)."""
    path = checkpoint_path(r)
    return r.zoo is None and not (path.is_file() and path.stat().st_size > MAX_CHECKPOINT_MB * 1e6)


def _zoo_unavailable(r: Recipe) -> str | None:
    """Why a zoo model's logits cannot be recomputed here (its weights are not downloaded), or None."""
    ds, threat, name = r.zoo
    try:
        entry = find_entry(name, ds, threat)
    except LogitscopeError as exc:
        return str(exc)
    return None if entry.downloaded() else f"its RobustBench weights are not in {model_dir()}"


def _bring_up_to_date(todo: Sequence[tuple[Recipe, bool, bool]], data: DataSpec, train_data: DataSpec,
                      attack: AttackSpec, grid: Sequence[float], device, data_dir: str | None,
                      report: Progress, ev: evidence.Evidence) -> None:
    """Make every (model, its grid logits?, its training-split logits?) of `todo` whole in the cache.

    A corrupt or missing checkpoint that will be packed is trained again (`ensure_model`), corrupt or
    missing logits are recomputed as `core.app.prepare` does (`get_grid` over `model_source`). A zoo model
    whose weights are not at hand cannot be recomputed: the bundle is refused, naming it.
    """
    for r, grid_logits, train_logits in todo:
        def on_train(p, name=r.name) -> None:
            report(f"training {name} again (its checkpoint was missing or corrupt)", p.fraction)

        def on_batch(b: int, n: int, name=r.name) -> None:
            report(f"recomputing missing or corrupt logits of {name}", b / n)

        if r.zoo is None and _packs_checkpoint(r) and not is_trained(r):
            ensure_model(r, device, on_train, data_dir=data_dir)
        if grid_logits and not logits_cached(r, data, attack, grid):
            if r.zoo is not None and (why := _zoo_unavailable(r)) is not None:
                raise LogitscopeError(
                    f"The logits of {r.name} for {attack.norm} PGD-{attack.steps} are missing or corrupt in "
                    f"{cache_dir()}, and they cannot be recomputed here: {why}. Run python -m core precompute "
                    f"--dataset {data.name} --zoo {r.zoo[2]} (it downloads the weights), or leave {r.name} out of "
                    "--models.")
            get_grid(model_source(r, device, on_train, data_dir=data_dir), r.key, data, attack, grid, device,
                     on_batch=on_batch, data_dir=data_dir)
        if grid_logits and not evidence.is_complete(r, data, ev) and (r.zoo is None or _zoo_unavailable(r) is None):
            # the overview's robust accuracy, findings and masking check read these (AutoAttack at the findings' eps)
            evidence.ensure(model_source(r, device, on_train, data_dir=data_dir), r, data, ev, device,
                            lambda what, f, name=r.name: report(f"evidence for {name}: {what}", f), data_dir=data_dir)
        if train_logits and not entry_ok(r.key, train_data, None):
            report(f"recomputing the training-split logits of {r.name}", 0.0)
            get_or_compute(model_source(r, device, on_train, data_dir=data_dir), r.key, train_data, device=device,
                           data_dir=data_dir)


def write_bundle(dataset: str, out: str | Path, names: str | Sequence[str] = "all", norm: str = "linf",
                 steps: int | None = None, data_dir: str | None = None, maps: bool = True,
                 progress: Progress | None = None, device: str | torch.device = "cpu") -> Written:
    """Pack the chosen models' logits (and what the pages need besides) into one zip file at `out`.

    First every packed model is made whole in the cache (see `_bring_up_to_date`; `progress(what, fraction)`
    reports that work), so the bundle holds every chosen model, or a LogitscopeError says which one cannot
    be and why. `maps` adds the embedding page's default UMAP maps (computing them takes a few seconds on
    digits). `device` trains and attacks what must be recomputed.
    """
    data, attack = eval_data(dataset), eval_attack(dataset, norm, steps)
    grid = eps_grid(dataset, norm, data_dir)
    shown = choose(dataset, names, data, attack, grid)
    report = progress or (lambda what, fraction: None)
    ds = load_dataset(dataset, data_dir)
    train_limit = hyper(dataset).train_limit
    n_train = len(ds.x_train) if train_limit is None else min(train_limit, len(ds.x_train))
    live = n_train * int(np.prod(ds.shape)) <= LIVE_TRAIN_VALUES
    train_data = DataSpec(dataset, "train", train_limit)
    shown_keys = {r.key for r in shown}
    # the lab's teachers: their checkpoints, grid logits (when evaluated) and clean training-split logits
    teachers = [t for t in teacher_recipes(dataset) if t.key in shown_keys or checkpoint_path(t).is_file()]
    todo = {r.key: (r, True, False) for r in shown}
    for t in teachers:  # training-split logits that were never computed stay out, as before
        todo[t.key] = (t, t.key in shown_keys or _evaluated(t, data, attack, grid),
                       live and entry_path(t.key, train_data, None).is_file())
    ev = evidence.evidence(dataset, norm, steps, data_dir=data_dir, grid=grid)
    _bring_up_to_date(list(todo.values()), data, train_data, attack, grid, device, data_dir, report, ev)

    with tempfile.TemporaryDirectory(prefix="logitscope-bundle-") as staging, \
            Packer(cache_dir(), Path(staging)) as pack:

        def add_checkpoint(r: Recipe) -> str | None:
            if not _packs_checkpoint(r):
                return None
            return pack.add_file(checkpoint_path(r), lambda p: load_checkpoint(p, key=r.key))

        def add_logits(r: Recipe, d: DataSpec, points: Sequence[float], by: AttackSpec = attack) -> None:
            for e in points:
                a = _at(by, e)
                pack.add_file(entry_path(r.key, d, a), lambda p: _load_checked(p, r.key, d, a))

        models = []
        for i, (r, grid_logits, train_logits) in enumerate(todo.values()):
            report("packing the bundle", i / len(todo))
            if grid_logits:
                add_logits(r, data, grid)
                if evidence.is_complete(r, data, ev):  # a zoo model without its weights may lack them
                    for by, points in ev.entries()[1:]:
                        add_logits(r, data, [e for e in points if e > 0], by)
            if train_logits:
                add_logits(r, train_data, [0.0])
            models.append(_model_entry(r, r.key in shown_keys, add_checkpoint(r)))
        zoo_keys = {r.key for r in shown if r.zoo is not None}
        if zoo_keys:
            pack.add_bytes("models/robustbench/evaluated.json", json.dumps(
                [e for e in evaluated_zoo(dataset) if e["key"] in zoo_keys], indent=1).encode())
        runs = lab.load_runs(dataset)
        if not runs.empty:
            buf = io.BytesIO()
            runs.to_parquet(buf, index=False)
            pack.add_bytes("lab/runs.parquet", buf.getvalue())
        x_test, y_test = ds.split(data)
        pack.add_bytes("data/test.npz", _npz(y=y_test.numpy(), **_images(x_test)))
        if live:
            pack.add_bytes("data/train.npz", _npz(y=ds.y_train[:n_train].numpy(), **_images(ds.x_train[:n_train])))
        for path in _maps(shown, data, attack, grid, data_dir) if maps else []:
            pack.add_file(path)
        table = views.sample_table(views.load_logit_set({r.name: r for r in shown}, data, attack, grid, data_dir))
        buf = io.BytesIO()
        table.assign(model=table["model"].astype(str)).to_parquet(buf, index=False)
        pack.add_bytes("stats/per_sample.parquet", buf.getvalue())
        manifest = {
            "format": FORMAT, "version": VERSION, "created": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
            "dataset": dataset, "data": data.to_dict(), "attack": attack.to_dict(), "eps": list(grid),
            "classes": list(ds.classes), "image_shape": list(ds.shape), "mean": list(ds.mean), "std": list(ds.std),
            "train_images": n_train if live else 0, "models": models, "files": dict(sorted(pack.files.items())),
        }
        blob = pack.close(manifest)
    report("packing the bundle", 1.0)
    out = Path(out)
    atomic_write(out, blob)  # a bundle is a few MB (CIFAR-10's: its 1,000 test images and the checkpoints)
    return Written(out, manifest, out.stat().st_size)
