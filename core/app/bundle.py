"""Portable bundles: what the app's pages need for one dataset, in one verified zip file.

`python -m core bundle --dataset digits --out digits.zip` packs, from the cache:
    manifest.json                         format and version, dataset, models (recipe specs and keys),
                                          attack, epsilon grid, creation time, a SHA-256 per file
    logits/<model key>/<entry>            the cache's logits entries over the grid (safetensors), plus
                                          the teachers' clean training-split logits (live distillation)
    models/<dataset>/<key>.pt             checkpoints up to MAX_CHECKPOINT_MB: the shown models (the
                                          differences page recomputes their adversarial images) and
                                          the teachers (the lab distils from them)
    models/robustbench/evaluated.json     the zoo models among them (never their checkpoints)
    lab/runs.parquet                      the lab's run table for the dataset
    data/test.npz, data/train.npz         the evaluation images (and, for digits-sized data, the training
                                          images) as uint8 with their scale: exactly the float images
    stats/per_sample.parquet              per-sample statistics of every model at every epsilon
    embeddings/<key>.parquet              UMAP maps of the pages' default view (standard and PGD-AT,
                                          every epsilon), so a demo visitor rarely waits for UMAP
The members below manifest.json keep the cache's own layout, so `extract` turns a bundle into a
cache folder that every part of Logitscope reads unchanged. Nothing in a bundle is pickled:
safetensors, Parquet, JSON, npz read with allow_pickle=False, and checkpoints that load with
torch's weights_only=True. `extract` checks every member's SHA-256 before anything uses it.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from core.app import embedding, lab, views
from core.app.prepare import logits_cached
from core.config import DataSpec, cache_dir
from core.engine.data import Dataset, load_dataset, make_dataset
from core.engine.logits import entry_path
from core.errors import LogitscopeError
from core.storage import atomic_write
from core.study.hyper import eps_grid, eval_attack, eval_data, hyper
from core.study.recipes import Recipe, checkpoint_path, evaluated_zoo, is_trained, teacher_recipes

FORMAT = "logitscope-bundle"
VERSION = 1
MAX_CHECKPOINT_MB = 25      # bigger checkpoints (PreAct ResNet-18: 45 MB) stay out; their pages show logits only
LIVE_TRAIN_VALUES = 10**6   # training images x pixels up to which the bundle carries the training split
                            # (digits: 1,437 x 64 = 92k): enough for live distillation on a small CPU host
MAP_MODELS, MAP_NEIGHBOURS = ("standard", "pgd-at"), 15  # the sidebar's and the embedding page's defaults
SCALES = (255, 16, 1)       # uint8 codes q with x == q / scale exactly (torchvision and own data: 255; digits: 16)


@dataclass(frozen=True)
class Written:
    path: Path
    manifest: dict
    bytes: int


def _catalog(dataset: str) -> dict[str, Recipe]:
    return views.catalog(dataset, extra=lab.run_recipes(dataset))


def choose(dataset: str, names: str | Sequence[str], data: DataSpec, attack, grid) -> list[Recipe]:
    """The named models of the dataset's catalog ("all": every one whose logits are cached)."""
    catalog = _catalog(dataset)
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if list(names) == ["all"]:
        ready = [r for r in catalog.values() if logits_cached(r, data, attack, grid)]
        if not ready:
            raise LogitscopeError(f"No {dataset} model has logits for {attack.norm} PGD-{attack.steps} over the grid "
                                  f"in {cache_dir()}: run python -m core precompute --dataset {dataset} first.")
        return ready
    unknown = [n for n in names if n not in catalog]
    if unknown:
        raise LogitscopeError(f"Unknown model(s) {', '.join(unknown)}: choose from {', '.join(catalog)}, or all.")
    missing = [n for n in names if not logits_cached(catalog[n], data, attack, grid)]
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


def write_bundle(dataset: str, out: str | Path, names: str | Sequence[str] = "all", norm: str = "linf",
                 steps: int | None = None, data_dir: str | None = None, maps: bool = True) -> Written:
    """Pack the chosen models' logits (and what the pages need besides) into one zip file at `out`.

    `maps` adds the embedding page's default UMAP maps (computing them takes a few seconds on digits).
    """
    data, attack = eval_data(dataset), eval_attack(dataset, norm, steps)
    grid = eps_grid(dataset, norm, data_dir)
    shown = choose(dataset, names, data, attack, grid)
    files: dict[str, bytes | Path] = {}
    root = cache_dir()

    def add_file(path: Path) -> str:
        rel = path.relative_to(root).as_posix()
        files[rel] = path
        return rel

    def add_checkpoint(r: Recipe) -> str | None:
        path = checkpoint_path(r)
        if r.zoo is not None or not path.is_file() or path.stat().st_size > MAX_CHECKPOINT_MB * 1e6:
            return None
        return add_file(path)

    models = []
    for r in shown:
        for e in grid:
            add_file(entry_path(r.key, data, None if e == 0 else attack.at(e)))
        models.append(_model_entry(r, True, add_checkpoint(r)))
    ds = load_dataset(dataset, data_dir)
    train_limit = hyper(dataset).train_limit
    n_train = len(ds.x_train) if train_limit is None else min(train_limit, len(ds.x_train))
    live = n_train * int(np.prod(ds.shape)) <= LIVE_TRAIN_VALUES
    for t in teacher_recipes(dataset):  # the lab's teachers: checkpoints, grid logits and clean training logits
        if not is_trained(t):
            continue
        ckpt = add_checkpoint(t)
        if t.key not in {m["key"] for m in models}:
            if logits_cached(t, data, attack, grid):
                for e in grid:
                    add_file(entry_path(t.key, data, None if e == 0 else attack.at(e)))
            models.append(_model_entry(t, False, ckpt))
        train_entry = entry_path(t.key, DataSpec(dataset, "train", train_limit), None)
        if live and train_entry.is_file():
            add_file(train_entry)
    zoo_keys = {r.key for r in shown if r.zoo is not None}
    if zoo_keys:
        files["models/robustbench/evaluated.json"] = json.dumps(
            [e for e in evaluated_zoo(dataset) if e["key"] in zoo_keys], indent=1).encode()
    runs = lab.load_runs(dataset)
    if not runs.empty:
        buf = io.BytesIO()
        runs.to_parquet(buf, index=False)
        files["lab/runs.parquet"] = buf.getvalue()
    x_test, y_test = ds.split(data)
    files["data/test.npz"] = _npz(y=y_test.numpy(), **_images(x_test))
    if live:
        files["data/train.npz"] = _npz(y=ds.y_train[:n_train].numpy(), **_images(ds.x_train[:n_train]))
    for path in _maps(shown, data, attack, grid, data_dir) if maps else []:
        add_file(path)
    table = views.sample_table(views.load_logit_set({r.name: r for r in shown}, data, attack, grid, data_dir))
    buf = io.BytesIO()
    table.assign(model=table["model"].astype(str)).to_parquet(buf, index=False)
    files["stats/per_sample.parquet"] = buf.getvalue()

    blobs = {k: (v.read_bytes() if isinstance(v, Path) else v) for k, v in sorted(files.items())}
    manifest = {
        "format": FORMAT, "version": VERSION, "created": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        "dataset": dataset, "data": data.to_dict(), "attack": attack.to_dict(), "eps": list(grid),
        "classes": list(ds.classes), "image_shape": list(ds.shape), "mean": list(ds.mean), "std": list(ds.std),
        "train_images": n_train if live else 0, "models": models,
        "files": {k: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)} for k, b in blobs.items()},
    }
    out = Path(out)
    packed = io.BytesIO()  # a bundle is a few MB (CIFAR-10's: its 1,000 test images and the checkpoints)
    with zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", json.dumps(manifest, indent=1))
        for name, blob in blobs.items():
            z.writestr(name, blob)
    atomic_write(out, packed.getvalue())
    return Written(out, manifest, out.stat().st_size)


def _refuse(path: Path, why: str) -> LogitscopeError:
    return LogitscopeError(f"{path} is not a usable Logitscope bundle: {why}. Create it again with "
                           "python -m core bundle --dataset <name> --out <file>.")


def read_manifest(path: str | Path) -> dict:
    """The manifest of a bundle, after checking that it is a zip of this format and version."""
    path = Path(path)
    if not path.is_file():
        raise LogitscopeError(f"No bundle at {path}: check the path (LOGITSCOPE_DEMO or --bundle).")
    if not zipfile.is_zipfile(path):
        raise _refuse(path, "it is not a zip file (truncated or another kind of file)")
    with zipfile.ZipFile(path) as z:
        try:
            manifest = json.loads(z.read("manifest.json"))
        except KeyError:
            raise _refuse(path, "it has no manifest.json") from None
        except (ValueError, zipfile.BadZipFile) as exc:
            raise _refuse(path, f"its manifest is unreadable ({type(exc).__name__})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _refuse(path, "its manifest is not a Logitscope bundle manifest")
    if manifest.get("version") != VERSION:
        raise _refuse(path, f"it is bundle format version {manifest.get('version')!r}, and this Logitscope reads "
                            f"version {VERSION}")
    return manifest


def _safe(name: str) -> bool:
    p = PurePosixPath(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts and "\\" not in name


def extract(path: str | Path, dest: str | Path) -> dict:
    """Unpack a bundle into the cache folder `dest` (created), verifying every member; returns the manifest.

    Raises LogitscopeError, leaving nothing in `dest`, when a member is missing, unexpected, or does
    not match its checksum. The bundle itself is only read.
    """
    path, dest = Path(path), Path(dest)
    manifest = read_manifest(path)
    expected = manifest.get("files", {})
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(path) as z:
            members = {i.filename for i in z.infolist() if not i.is_dir()} - {"manifest.json"}
            extra = sorted(members - set(expected))
            if extra:
                raise _refuse(path, f"it holds files its manifest does not list ({', '.join(extra[:3])})")
            for name, info in sorted(expected.items()):
                if not _safe(name):
                    raise _refuse(path, f"its manifest names an unsafe path {name!r}")
                if name not in members:
                    raise _refuse(path, f"{name} is missing")
                try:
                    blob = z.read(name)
                except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:  # damaged in transit
                    raise _refuse(path, f"{name} is damaged ({exc})") from exc
                if hashlib.sha256(blob).hexdigest() != info.get("sha256") or len(blob) != info.get("bytes"):
                    raise _refuse(path, f"{name} does not match its checksum (the file was modified or damaged)")
                atomic_write(dest / name, blob)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    atomic_write(dest / "bundle.json", json.dumps(manifest, indent=1).encode())
    return manifest


def _load_images(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        x = f["q"].astype(np.float32) / np.float32(f["scale"]) if "q" in f else f["x"]
        return x, f["y"].astype(np.int64)


def bundled_dataset(dest: str | Path, manifest: dict) -> Dataset:
    """The dataset an extracted bundle carries: its evaluation images and, if bundled, its training images."""
    dest = Path(dest)
    x_test, y_test = _load_images(dest / "data" / "test.npz")
    name, classes = manifest["dataset"], manifest["classes"]
    if (dest / "data" / "train.npz").is_file():
        x_train, y_train = _load_images(dest / "data" / "train.npz")
    else:
        x_train, y_train = np.zeros((0, *manifest["image_shape"]), np.float32), np.zeros(0, np.int64)
    ds = make_dataset(name, x_train, y_train, x_test, y_test, classes)  # checks ranges and labels
    # the statistics of the whole training split, which the bundled models' Normalize layers were built with
    return replace(ds, mean=tuple(manifest["mean"]), std=tuple(manifest["std"]))
