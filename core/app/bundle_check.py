"""The bundle format: what a bundle holds, its limits, and the checks that nothing in it is trusted before.

A bundle (written by `core.app.bundle`, read by `core.app.bundle_read`) is one zip file of:
    manifest.json                         format and version, dataset, models (recipe specs and keys),
                                          attack, epsilon grid, creation time, a SHA-256 per file
    logits/<model key>/<entry>            the cache's logits entries over the grid (safetensors), plus
                                          the teachers' clean training-split logits (live distillation)
    models/<dataset>/<key>.pt             checkpoints up to the writer's size cap: the shown models (the
                                          differences page recomputes their adversarial images) and
                                          the teachers (the lab distils from them)
    models/robustbench/evaluated.json     the zoo models among them (never their checkpoints)
    lab/runs.parquet                      the lab's run table for the dataset
    data/test.npz, data/train.npz         the evaluation images (and, for digits-sized data, the training
                                          images) as uint8 with their scale: exactly the float images
    stats/per_sample.parquet              per-sample statistics of every model at every epsilon
    embeddings/<key>.parquet              UMAP maps of the pages' default view (standard and PGD-AT,
                                          every epsilon), so a demo visitor rarely waits for UMAP
The members keep the cache's own layout, so an unpacked bundle is a cache folder that every part of
Logitscope reads unchanged. Nothing in a bundle is pickled: safetensors, Parquet, JSON, npz read with
allow_pickle=False, and checkpoints that load with torch's weights_only=True.

Here: the format's constants and limits (one place: the reader refers to them through this module, so
a test that lowers a limit lowers it everywhere), `check_manifest` (the manifest against its schema) and
`check_arrays` (every unpacked array file's keys, shapes, dtypes and labels, from their headers before
their data). Both raise `Invalid`, which the reader turns into one clear LogitscopeError.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np
from safetensors import safe_open

from core.config import AttackSpec, DataSpec
from core.engine.data import is_dataset_name
from core.errors import LogitscopeError
from core.storage import safe_part
from core.study.hyper import hyper

FORMAT = "logitscope-bundle"
VERSION = 1
LIVE_TRAIN_VALUES = 10**6   # training images x pixels up to which the bundle carries the training split
                            # (digits: 1,437 x 64 = 92k): enough for live distillation on a small CPU host
SCALES = (255, 16, 1)       # uint8 codes q with x == q / scale exactly (torchvision and own data: 255; digits: 16)
# Limits on what a bundle may unpack to. A CIFAR-10 bundle of the default study is about 40 MB unpacked (10
# small-CNN checkpoints of 2.4 MB, 1,000 test images, logits of a few kB per entry); 512 MB leaves room for
# about 20 checkpoints at the writer's 25 MB cap, yet keeps a hostile bundle from filling a small host's disk.
MAX_UNPACKED_MB = 512       # the sum of the members' sizes (MB = 10**6 bytes); the zip file may not be bigger
MAX_MEMBERS = 10_000        # files in a bundle (the default digits study: under 100)
MAX_MANIFEST_BYTES = 8 << 20  # a manifest of MAX_MEMBERS files is about 1.3 MB
MAX_TEST_VALUES = 32 * 10**6  # evaluation images x values: all of CIFAR-10's 10,000 (128 MB as float32)
MAX_IMAGES = 100_000        # images per split (MNIST's and CIFAR-10's test splits: 10,000)
MAX_CLASSES = 1000          # ImageNet's count
RESERVED = ("manifest.json", "bundle.json")  # the reader writes bundle.json beside the members


class Invalid(Exception):
    """What is wrong with a manifest or an array file (the reader refuses the bundle, saying it)."""


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _text(v, longest: int = 500) -> bool:
    return isinstance(v, str) and 0 < len(v) <= longest


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise Invalid(what)


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
            raise Invalid(f"{what} has no usable key") from None
        _need(isinstance(m.get("shown"), bool), f"{what} lacks 'shown' (true or false)")
        ckpt = m.get("checkpoint")
        _need(ckpt is None or (isinstance(ckpt, str) and ckpt in files), f"{what} names a checkpoint the bundle lacks")
        _need(m.get("teacher") is None or _text(m["teacher"]), f"{what} has a teacher that is not a name")
        _need("spec" not in m or isinstance(m["spec"], dict), f"{what} has a spec that is not an object")
        _need("zoo" not in m or (isinstance(m["zoo"], list) and len(m["zoo"]) == 3 and all(map(_text, m["zoo"]))),
              f"{what} has a zoo entry that is not [dataset, threat, name]")
    _need(any(m["shown"] for m in models), "it shows no model")


def check_manifest(m: object) -> None:
    """Raise Invalid unless `m` has every field the app reads, with the types and ranges it expects."""
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
        raise Invalid(f"its data or attack settings are unusable ({exc})") from None
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
        raise Invalid(f"its epsilon grid is unusable ({exc})") from None
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


def read_images(path: Path, manifest: dict, most: int) -> tuple[np.ndarray, np.ndarray]:
    """The (x float32 (N, C, H, W) in [0, 1], y int64 (N,) in 0..K-1) of an npz the bundle carries, checked:
    keys y with q (uint8) and scale (one of SCALES), or y with x (float); shapes as the manifest says; N x C
    x H x W at most `most`. Raises Invalid."""
    try:
        return _read_images_checked(path, manifest, most)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, KeyError, RuntimeError,
            NotImplementedError) as exc:  # whatever numpy's npz reader raises on a damaged file
        raise Invalid(f"data/{path.name} is not a readable npz file ({type(exc).__name__}: {exc})") from None


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
        raise Invalid(f"{name} is not a safetensors file ({type(exc).__name__})") from None
    _need(shapes == {"logits": (n, k), "labels": (n,)}, f"{name} holds {shapes}, not logits ({n}, {k}) and labels "
                                                        f"({n},) of its images")


def check_arrays(dest: Path, manifest: dict) -> None:
    """Every array file of an unpacked bundle: images, logits entries and the zoo list. Raises Invalid."""
    files, k = manifest["files"], len(manifest["classes"])
    data = DataSpec.from_dict(manifest["data"])
    _, y = read_images(dest / "data" / "test.npz", manifest, MAX_TEST_VALUES)
    _need(len(y) > 0 and (data.limit is None or len(y) <= data.limit), "data/test.npz holds no or too many images")
    if "data/train.npz" in files:
        _, y_train = read_images(dest / "data" / "train.npz", manifest, LIVE_TRAIN_VALUES)
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
            raise Invalid(f"models/robustbench/evaluated.json is unreadable ({type(exc).__name__})") from None
        _need(isinstance(items, list) and all(
            isinstance(e, dict) and all(_text(e.get(f)) for f in ("dataset", "threat", "name", "key"))
            and (e.get("output_kind") is None or isinstance(e["output_kind"], str)) for e in items),
            "models/robustbench/evaluated.json is not a list of zoo models")
