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
The members keep the cache's own layout, so `extract` turns a bundle into a cache folder that every
part of Logitscope reads unchanged. Nothing in a bundle is pickled: safetensors, Parquet, JSON, npz
read with allow_pickle=False, and checkpoints that load with torch's weights_only=True.

Writing repairs before it packs: a corrupt or missing checkpoint is trained again and a corrupt or
missing logits entry recomputed (`_bring_up_to_date`), or the bundle is refused saying which model
and why; then every checkpoint and logits entry is read once, those bytes are checked by the cache's
own checks, and exactly those bytes are packed (`_Packer`).

Reading trusts nothing: the manifest is checked against its schema (`_check_manifest`), the zip's
size, member count, every member's declared and actual size and its SHA-256 while it is streamed to
disk (`extract`, never a member whole in memory), and every array's keys, shapes and dtypes
(`_check_arrays`). Any failure is one clear LogitscopeError (`_refuse`), never a traceback.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open

from core.app import embedding, lab, views
from core.app.prepare import logits_cached
from core.config import AttackSpec, DataSpec, cache_dir
from core.engine.data import Dataset, is_dataset_name, load_dataset, make_dataset
from core.engine.logits import _load_checked, entry_ok, entry_path, get_grid, get_or_compute
from core.engine.models import load_checkpoint
from core.engine.zoo import find_entry, model_dir
from core.errors import LogitscopeError
from core.storage import atomic_file, atomic_write, safe_part
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

FORMAT = "logitscope-bundle"
VERSION = 1
MAX_CHECKPOINT_MB = 25      # bigger checkpoints (PreAct ResNet-18: 45 MB) stay out; their pages show logits only
LIVE_TRAIN_VALUES = 10**6   # training images x pixels up to which the bundle carries the training split
                            # (digits: 1,437 x 64 = 92k): enough for live distillation on a small CPU host
MAP_MODELS, MAP_NEIGHBOURS = ("standard", "pgd-at"), 15  # the sidebar's and the embedding page's defaults
SCALES = (255, 16, 1)       # uint8 codes q with x == q / scale exactly (torchvision and own data: 255; digits: 16)
# Limits on what a bundle may unpack to. A CIFAR-10 bundle of the default study is about 40 MB unpacked (10
# small-CNN checkpoints of 2.4 MB, 1,000 test images, logits of a few kB per entry); 512 MB leaves room for
# about 20 checkpoints at the MAX_CHECKPOINT_MB cap, yet keeps a hostile bundle from filling a small host's disk.
MAX_UNPACKED_MB = 512       # the sum of the members' sizes (MB = 10**6 bytes); the zip file may not be bigger
MAX_MEMBERS = 10_000        # files in a bundle (the default digits study: under 100)
MAX_MANIFEST_BYTES = 8 << 20  # a manifest of MAX_MEMBERS files is about 1.3 MB
MAX_TEST_VALUES = 32 * 10**6  # evaluation images x values: all of CIFAR-10's 10,000 (128 MB as float32)
MAX_IMAGES = 100_000        # images per split (MNIST's and CIFAR-10's test splits: 10,000)
MAX_CLASSES = 1000          # ImageNet's count
CHUNK = 1 << 20             # bytes per read while a member streams to disk
RESERVED = ("manifest.json", "bundle.json")  # `extract` writes bundle.json beside the members
Progress = Callable[[str, float], None]  # (what runs now, fraction of it done), e.g. the CLI's tqdm bar


@dataclass(frozen=True)
class Written:
    path: Path
    manifest: dict
    bytes: int


def _catalog(dataset: str) -> dict[str, Recipe]:
    return views.catalog(dataset, extra=lab.run_recipes(dataset))


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
                      report: Progress) -> None:
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
        if train_logits and not entry_ok(r.key, train_data, None):
            report(f"recomputing the training-split logits of {r.name}", 0.0)
            get_or_compute(model_source(r, device, on_train, data_dir=data_dir), r.key, train_data, device=device,
                           data_dir=data_dir)


class _Packer:
    """A bundle being packed in memory. `add_file` reads a cache file once, checks those bytes with the cache's
    own check (on a private copy, so nothing else can change them in between) and packs exactly those bytes."""

    def __init__(self, root: Path, staging: Path):
        self.root, self.staging, self.buffer = root, staging, io.BytesIO()
        self.zip = zipfile.ZipFile(self.buffer, "w", compression=zipfile.ZIP_DEFLATED)
        self.files: dict[str, dict] = {}

    def add_bytes(self, name: str, blob: bytes) -> str:
        self.zip.writestr(name, blob)
        self.files[name] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
        return name

    def add_file(self, path: Path, check: Callable[[Path], object] | None = None) -> str:
        name = path.relative_to(self.root).as_posix()
        if name in self.files:
            return name
        try:
            blob = path.read_bytes()
            if check is not None:
                staged = self.staging / f"{len(self.files)}-{path.name}"
                staged.write_bytes(blob)
                try:
                    check(staged)
                finally:
                    staged.unlink(missing_ok=True)
        except Exception as exc:  # any way the bytes can be bad: never packed
            why = str(exc).replace(str(self.staging), "")  # the reason, without the private copy's folder
            raise LogitscopeError(f"{path} failed its check as it was packed ({why}): it changed while the bundle "
                                  "was written, or the disk returns other bytes than were written. Run the command "
                                  "again.") from exc
        return self.add_bytes(name, blob)

    def close(self, manifest: dict) -> bytes:
        self.zip.writestr("manifest.json", json.dumps(manifest, indent=1))
        self.zip.close()
        return self.buffer.getvalue()

    def __enter__(self) -> _Packer:
        return self

    def __exit__(self, *exc) -> None:
        self.zip.close()  # a no-op after `close`; after an error, the half-packed bundle is dropped


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
    _bring_up_to_date(list(todo.values()), data, train_data, attack, grid, device, data_dir, report)

    with tempfile.TemporaryDirectory(prefix="logitscope-bundle-") as staging, \
            _Packer(cache_dir(), Path(staging)) as pack:

        def add_checkpoint(r: Recipe) -> str | None:
            if not _packs_checkpoint(r):
                return None
            return pack.add_file(checkpoint_path(r), lambda p: load_checkpoint(p, key=r.key))

        def add_logits(r: Recipe, d: DataSpec, points: Sequence[float]) -> None:
            for e in points:
                a = _at(attack, e)
                pack.add_file(entry_path(r.key, d, a), lambda p: _load_checked(p, r.key, d, a))

        models = []
        for i, (r, grid_logits, train_logits) in enumerate(todo.values()):
            report("packing the bundle", i / len(todo))
            if grid_logits:
                add_logits(r, data, grid)
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


# --- reading: nothing in a bundle is trusted before it is checked ---------------------------------------


def _refuse(path: Path, why: str) -> LogitscopeError:
    return LogitscopeError(f"{path} is not a usable Logitscope bundle: {why}. Create it again with "
                           "python -m core bundle --dataset <name> --out <file>.")


class _Invalid(Exception):
    """What is wrong with a manifest or an array file (turned into `_refuse`)."""


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _text(v, longest: int = 500) -> bool:
    return isinstance(v, str) and 0 < len(v) <= longest


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise _Invalid(what)


def _safe(name: str) -> bool:
    """A relative path of plain parts: nothing absolute, no '.', '..', empty part, backslash, colon or NUL."""
    return (_text(name, 300) and not any(c in name for c in "\\:\0")
            and all(p and p not in (".", "..") and len(p) <= 200 for p in name.split("/")))


def _check_files(files: dict, train_images: int) -> None:
    _need(len(files) <= MAX_MEMBERS, f"it lists {len(files)} files, more than the {MAX_MEMBERS} a bundle may hold")
    total = 0
    for name, info in files.items():
        _need(_safe(name), f"its manifest names an unsafe path {name!r}")
        _need(name not in RESERVED, f"its manifest lists a file named {name}, a name the bundle reserves")
        _need(isinstance(info, dict) and isinstance(info.get("sha256"), str)
              and re.fullmatch("[0-9a-f]{64}", info["sha256"]) is not None
              and _int(info.get("bytes")) and info["bytes"] >= 0,
              f"its entry for {name} is not {{sha256: 64 hex digits, bytes: a non-negative integer}}")
        total += info["bytes"]
    _need(total <= MAX_UNPACKED_MB * 10**6, f"it unpacks to {total / 1e6:.0f} MB, more than the {MAX_UNPACKED_MB} MB "
                                            "a bundle may hold")
    folded = {}
    for name in files:  # one name per file also on a case-insensitive disk
        _need(name.casefold() not in folded, f"it lists both {folded.get(name.casefold())} and {name}")
        folded[name.casefold()] = name
    folders = {"/".join(name.split("/")[:i]).casefold() for name in files for i in range(1, name.count("/") + 1)}
    clash = sorted(n for n in files if n.casefold() in folders)
    _need(not clash, f"{clash[0] if clash else ''} is both a file and a folder of other files")
    _need("data/test.npz" in files, "it lacks data/test.npz, the evaluation images")
    _need(("data/train.npz" in files) == (train_images > 0),
          f"train_images ({train_images}) and the presence of data/train.npz disagree")


def _check_models(models: list, files: dict) -> None:
    _need(0 < len(models) <= MAX_MEMBERS, "its model list is empty or too long")
    names = set()
    for m in models:
        _need(isinstance(m, dict), "a model entry is not an object")
        _need(_text(m.get("name")) and _text(m.get("role"), 50), "a model entry lacks its name or role")
        what = f"model {m['name']!r}"
        _need(m["name"] not in names, f"{what} is listed twice")
        names.add(m["name"])
        try:
            safe_part(m.get("key"), "Model key")
        except LogitscopeError:
            raise _Invalid(f"{what} has no usable key") from None
        _need(isinstance(m.get("shown"), bool), f"{what} lacks 'shown' (true or false)")
        ckpt = m.get("checkpoint")
        _need(ckpt is None or (isinstance(ckpt, str) and ckpt in files), f"{what} names a checkpoint the bundle lacks")
        _need(m.get("teacher") is None or _text(m["teacher"]), f"{what} has a teacher that is not a name")
        _need("spec" not in m or isinstance(m["spec"], dict), f"{what} has a spec that is not an object")
        _need("zoo" not in m or (isinstance(m["zoo"], list) and len(m["zoo"]) == 3 and all(map(_text, m["zoo"]))),
              f"{what} has a zoo entry that is not [dataset, threat, name]")
    _need(any(m["shown"] for m in models), "it shows no model")


def _check_manifest(m: object) -> None:
    """Raise _Invalid unless `m` has every field the app reads, with the types and ranges it expects."""
    _need(isinstance(m, dict), "its manifest is not an object")
    kinds = {"created": str, "dataset": str, "data": dict, "attack": dict, "eps": list, "classes": list,
             "image_shape": list, "mean": list, "std": list, "train_images": int, "models": list, "files": dict}
    for key, kind in kinds.items():
        _need(key in m, f"its manifest lacks {key!r}")
        _need(isinstance(m[key], kind) and not isinstance(m[key], bool),
              f"its manifest's {key!r} is a {type(m[key]).__name__}, not a {kind.__name__}")
    _need(_text(m["created"], 100), "its creation time is empty")
    _need(_text(m["dataset"], 1000) and is_dataset_name(m["dataset"]), f"{m['dataset']!r} is not a dataset name")
    try:
        data, attack = DataSpec.from_dict(m["data"]), AttackSpec.from_dict(m["attack"])
    except (LogitscopeError, TypeError, ValueError) as exc:
        raise _Invalid(f"its data or attack settings are unusable ({exc})") from None
    _need(data.name == m["dataset"] and data.split == "test", "its data settings are not its dataset's test split")
    _need(isinstance(attack.norm, str) and _int(attack.steps) and attack.steps >= 1 and _number(attack.eps),
          "its attack lacks a norm or a positive number of steps")
    eps = m["eps"]
    _need(0 < len(eps) <= 1000 and all(_number(e) and e >= 0 for e in eps),
          "its epsilon grid is not a list of finite non-negative numbers")
    try:
        for e in eps:
            AttackSpec(norm=attack.norm, eps=float(e))
    except LogitscopeError as exc:
        raise _Invalid(f"its epsilon grid is unusable ({exc})") from None
    _need(0 < len(m["classes"]) <= MAX_CLASSES and all(_text(c, 200) for c in m["classes"]),
          f"its classes are not a list of 1 to {MAX_CLASSES} names")
    shape = m["image_shape"]
    _need(len(shape) == 3 and all(_int(s) and 1 <= s <= 4096 for s in shape), "its image shape is not [C, H, W]")
    for key in ("mean", "std"):
        _need(len(m[key]) == shape[0] and all(_number(v) for v in m[key]), f"its {key} is not one number per channel")
    _need(all(v > 0 for v in m["std"]), "its std is not positive")
    _need(m["train_images"] >= 0, "its train_images is negative")
    _check_files(m["files"], m["train_images"])
    _check_models(m["models"], m["files"])


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError, NotImplementedError) as exc:
        raise _refuse(path, f"it is not a readable zip file ({type(exc).__name__})") from exc


def _stream(path: Path, z: zipfile.ZipFile, info: zipfile.ZipInfo, size: int, sink: IO[bytes]) -> str:
    """Copy a member to `sink` in chunks, reading at most `size` + 1 bytes; its SHA-256."""
    h, n = hashlib.sha256(), 0
    try:
        with z.open(info) as src:
            while chunk := src.read(min(CHUNK, size + 1 - n)):
                n += len(chunk)
                if n > size:
                    raise _refuse(path, f"{info.filename} is larger than its manifest says ({size} bytes)")
                h.update(chunk)
                sink.write(chunk)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError, NotImplementedError, ValueError) as exc:
        raise _refuse(path, f"{info.filename} is damaged ({exc})") from exc  # damaged in transit, or encrypted
    if n != size:
        raise _refuse(path, f"{info.filename} does not match its checksum (the file was modified or damaged)")
    return h.hexdigest()


def read_manifest(path: str | Path) -> dict:
    """The manifest of a bundle, after checking that it is a zip of this format and version, within the size
    limits, and that the manifest has every field the app reads (`_check_manifest`)."""
    path = Path(path)
    if not path.is_file():
        raise LogitscopeError(f"No bundle at {path}: check the path (LOGITSCOPE_DEMO or --bundle).")
    if path.stat().st_size > max_bundle_bytes():
        raise _refuse(path, f"it is larger than the {MAX_UNPACKED_MB} MB a bundle may unpack to")
    if not zipfile.is_zipfile(path):
        raise _refuse(path, "it is not a zip file (truncated or another kind of file)")
    with _open_zip(path) as z:
        if len(z.infolist()) > MAX_MEMBERS + 1:
            raise _refuse(path, f"it holds more than the {MAX_MEMBERS} files a bundle may hold")
        try:
            info = z.getinfo("manifest.json")
        except KeyError:
            raise _refuse(path, "it has no manifest.json") from None
        if info.file_size > MAX_MANIFEST_BYTES:
            raise _refuse(path, f"its manifest is larger than {MAX_MANIFEST_BYTES >> 20} MB")
        raw = io.BytesIO()
        _stream(path, z, info, info.file_size, raw)
    try:
        manifest = json.loads(raw.getvalue())
    except (ValueError, RecursionError) as exc:
        raise _refuse(path, f"its manifest is unreadable ({type(exc).__name__})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _refuse(path, "its manifest is not a Logitscope bundle manifest")
    if manifest.get("version") != VERSION:
        raise _refuse(path, f"it is bundle format version {manifest.get('version')!r}, and this Logitscope reads "
                            f"version {VERSION}")
    try:
        _check_manifest(manifest)
    except _Invalid as exc:
        raise _refuse(path, str(exc)) from None
    return manifest


def max_bundle_bytes() -> int:
    """The largest bundle file accepted: its unpacked limit, plus room for the zip's headers."""
    return MAX_UNPACKED_MB * 10**6 + MAX_MEMBERS * 1024


def extract(path: str | Path, dest: str | Path) -> dict:
    """Unpack a bundle into the cache folder `dest` (created), verifying every member; returns the manifest.

    Each member streams to disk in chunks through its SHA-256, stopping at its declared size, so a
    zip bomb costs at most one chunk of memory. Raises LogitscopeError, leaving nothing in `dest`, when
    the manifest or an array file is malformed, or a member is missing, unexpected, too large, or does
    not match its checksum. The bundle itself is only read.
    """
    path, dest = Path(path), Path(dest)
    manifest = read_manifest(path)
    expected = manifest["files"]
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with _open_zip(path) as z:
            infos = [i for i in z.infolist() if not i.is_dir() and i.filename != "manifest.json"]
            members = {i.filename: i for i in infos}
            if len(members) < len(infos):
                raise _refuse(path, "it holds two members of the same name")
            extra = sorted(set(members) - set(expected))
            if extra:
                raise _refuse(path, f"it holds files its manifest does not list ({', '.join(extra[:3])})")
            for name, want in sorted(expected.items()):
                info = members.get(name)
                if info is None:
                    raise _refuse(path, f"{name} is missing")
                if info.file_size != want["bytes"]:
                    raise _refuse(path, f"{name} is {info.file_size} bytes in the zip and {want['bytes']} in its "
                                        "manifest (the file was modified or damaged)")
                with atomic_file(dest / name) as sink:
                    if _stream(path, z, info, want["bytes"], sink) != want["sha256"]:
                        raise _refuse(path, f"{name} does not match its checksum (the file was modified or damaged)")
        try:
            _check_arrays(dest, manifest)
        except _Invalid as exc:
            raise _refuse(path, str(exc)) from None
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    atomic_write(dest / "bundle.json", json.dumps(manifest, indent=1).encode())
    return manifest


def _npy_headers(path: Path) -> dict[str, tuple[tuple, np.dtype]]:
    """{array name: (shape, dtype)} of an npz file, read from the headers alone (nothing allocated)."""
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        _need(len(infos) <= 3 and len({i.filename for i in infos}) == len(infos), f"{path.name} holds other arrays")
        out = {}
        for info in infos:
            _need(info.filename.endswith(".npy"), f"{path.name} holds {info.filename!r}, not an array")
            with z.open(info) as f:
                version = np.lib.format.read_magic(f)
                _need(version in ((1, 0), (2, 0)), f"{path.name} uses npy format {version}")
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f)
            out[info.filename[:-4]] = (tuple(shape), dtype)
        return out


def _read_images(path: Path, manifest: dict, most: int) -> tuple[np.ndarray, np.ndarray]:
    """The (x float32 (N, C, H, W) in [0, 1], y int64 (N,) in 0..K-1) of an npz the bundle carries, checked:
    keys y with q (uint8) and scale (one of SCALES), or y with x (float); shapes as the manifest says; N x C
    x H x W at most `most`. Raises _Invalid."""
    try:
        return _read_images_checked(path, manifest, most)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, KeyError, RuntimeError,
            NotImplementedError) as exc:  # whatever numpy's npz reader raises on a damaged file
        raise _Invalid(f"data/{path.name} is not a readable npz file ({type(exc).__name__}: {exc})") from None


def _read_images_checked(path: Path, manifest: dict, most: int) -> tuple[np.ndarray, np.ndarray]:
    what = f"data/{path.name}"
    headers = _npy_headers(path)
    _need(set(headers) in ({"y", "q", "scale"}, {"y", "x"}), f"{what} holds arrays {sorted(headers)}, not y with "
                                                             "q and scale, or y with x")
    (y_shape, y_type), image = headers["y"], "q" if "q" in headers else "x"
    x_shape, x_type = headers[image]
    _need(len(y_shape) == 1 and y_type.kind in "iu", f"{what}: its labels y are not a vector of integers")
    shape = (y_shape[0], *manifest["image_shape"])
    _need(x_shape == shape, f"{what}: its images have shape {x_shape}, and the manifest's image shape and labels "
                            f"say {shape}")
    _need(shape[0] <= MAX_IMAGES and math.prod(shape) <= most, f"{what} holds more than {MAX_IMAGES} images or "
                                                                 f"{most} image values")
    if image == "q":
        _need(x_type == np.uint8 and headers["scale"][0] == () and headers["scale"][1].kind in "iu",
              f"{what}: its images are not uint8 codes with a scale")
    else:
        _need(x_type.kind == "f", f"{what}: its images are not floats")
    with np.load(path, allow_pickle=False) as f:
        y = f["y"].astype(np.int64)
        if image == "q":
            scale, q = int(f["scale"]), f["q"]
            _need(scale in SCALES and (q.size == 0 or int(q.max()) <= scale), f"{what}: its codes are not in [0, scale]")
            x = q.astype(np.float32) / np.float32(scale)
        else:
            x = f["x"].astype(np.float32)
            _need(bool(np.isfinite(x).all()) and (x.size == 0 or (x.min() >= 0 and x.max() <= 1)),
                  f"{what}: its images are not in [0, 1]")
    k = len(manifest["classes"])
    _need(y.size == 0 or (y.min() >= 0 and y.max() < k), f"{what}: its labels are not in 0..{k - 1}")
    return x, y


def _check_logits(dest: Path, name: str, n: int, k: int) -> None:
    """A logits entry's tensors are logits (n, k) and labels (n,), read from its header alone."""
    try:
        with safe_open(str(dest / name), "pt") as f:
            shapes = {t: tuple(f.get_slice(t).get_shape()) for t in f.keys()}
    except Exception as exc:  # the safetensors reader's errors have no common base
        raise _Invalid(f"{name} is not a safetensors file ({type(exc).__name__})") from None
    _need(shapes == {"logits": (n, k), "labels": (n,)}, f"{name} holds {shapes}, not logits ({n}, {k}) and labels "
                                                        f"({n},) of its images")


def _check_arrays(dest: Path, manifest: dict) -> None:
    """Every array file of an unpacked bundle: images, logits entries and the zoo list. Raises _Invalid."""
    files, k = manifest["files"], len(manifest["classes"])
    data = DataSpec.from_dict(manifest["data"])
    _, y = _read_images(dest / "data" / "test.npz", manifest, MAX_TEST_VALUES)
    _need(len(y) > 0 and (data.limit is None or len(y) <= data.limit), "data/test.npz holds no or too many images")
    if "data/train.npz" in files:
        _, y_train = _read_images(dest / "data" / "train.npz", manifest, LIVE_TRAIN_VALUES)
        _need(len(y_train) == manifest["train_images"], "data/train.npz does not hold train_images images")
    try:  # the lab's teachers' training-split logits, as `write_bundle` names them
        train_entry = f"/{DataSpec(data.name, 'train', hyper(data.name).train_limit).key()}-"
    except LogitscopeError:
        train_entry = None
    test_entry = f"/{data.key()}-"
    for name in files:
        if name.startswith("logits/") and test_entry in name:
            _check_logits(dest, name, len(y), k)
        elif name.startswith("logits/") and train_entry is not None and train_entry in name:
            _check_logits(dest, name, manifest["train_images"], k)
    if "models/robustbench/evaluated.json" in files:
        try:
            items = json.loads((dest / "models" / "robustbench" / "evaluated.json").read_text())
        except (ValueError, RecursionError, UnicodeDecodeError) as exc:
            raise _Invalid(f"models/robustbench/evaluated.json is unreadable ({type(exc).__name__})") from None
        _need(isinstance(items, list) and all(
            isinstance(e, dict) and all(_text(e.get(f)) for f in ("dataset", "threat", "name", "key"))
            and (e.get("output_kind") is None or isinstance(e["output_kind"], str)) for e in items),
            "models/robustbench/evaluated.json is not a list of zoo models")


def bundled_dataset(dest: str | Path, manifest: dict) -> Dataset:
    """The dataset an extracted bundle carries: its evaluation images and, if bundled, its training images.

    The arrays are checked again (`extract` checked them once); a bad one raises LogitscopeError."""
    dest = Path(dest)
    try:
        x_test, y_test = _read_images(dest / "data" / "test.npz", manifest, MAX_TEST_VALUES)
        if (dest / "data" / "train.npz").is_file():
            x_train, y_train = _read_images(dest / "data" / "train.npz", manifest, LIVE_TRAIN_VALUES)
        else:
            x_train, y_train = np.zeros((0, *manifest["image_shape"]), np.float32), np.zeros(0, np.int64)
    except _Invalid as exc:
        raise _refuse(dest, str(exc)) from None
    ds = make_dataset(manifest["dataset"], x_train, y_train, x_test, y_test, manifest["classes"])
    # the statistics of the whole training split, which the bundled models' Normalize layers were built with
    return replace(ds, mean=tuple(manifest["mean"]), std=tuple(manifest["std"]))
