"""Your own images as a dataset: a .npz file, or a folder with one sub-folder of PNG/JPEG per class.

Names are "npz:<path>" and "folder:<path>", resolved by `core.engine.data.load_dataset` (the CLI's
--dataset, the app's dataset box). A relative path is taken relative to `data_dir` when one is
given (--data-dir), else to the working directory. `own_data_name` turns such a name into its
canonical form "npz:/abs/path.npz@<12 hex digits>": an absolute path plus a hash of the content, so
models and logits cached for one version of your data are never reused for another (loading a
canonical name whose file has changed since raises LogitscopeError).

npz (saved with np.savez, loaded with allow_pickle=False):
    images  uint8 (N, H, W, C), (N, C, H, W) or (N, H, W); C is 1 or 3 (NHWC when the last axis is 1 or 3)
    labels  integers (N,) in [0, K)
    or x_train, y_train, x_test, y_test (your own split) in the same formats
    class_names  optional, strings (K,), e.g. np.array(["cat", "dog"])
folder: <root>/<class>/*.png|*.jpg|*.jpeg, classes in sorted folder-name order, or <root>/train/<class>/
    and <root>/test/<class>/ for your own split. All images must have the same size (nothing is
    resized); grey if every image is grey, else RGB (alpha is dropped).
Without an explicit split, the test split is 20% of each class, drawn with seed 0 (deterministic).
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path

import numpy as np

from core.engine.registry import MAX_CLASSES, Dataset, check_class_count, make_dataset, register_scheme
from core.errors import LogitscopeError

SPLIT_SEED = 0
TEST_FRACTION = 0.2
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FINGERPRINT_LENGTH = 12
NPZ_KEYS = ({"images", "labels"}, {"x_train", "y_train", "x_test", "y_test"})


def stratified_split(labels: np.ndarray, test_fraction: float = TEST_FRACTION,
                     seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices: round(test_fraction * n) of each class's n samples go to test (at
    least one when n >= 2, none when n == 1); both shuffled. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = 0 if len(idx) < 2 else min(max(int(round(len(idx) * test_fraction)), 1), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def to_nchw(images: np.ndarray, where: str) -> np.ndarray:
    """uint8 images (N, H, W, C), (N, C, H, W) or (N, H, W) -> float32 (N, C, H, W) in [0, 1]."""
    if images.dtype != np.uint8:
        raise LogitscopeError(f"{where}: images must be uint8 (0..255), got {images.dtype}. Floats in [0, 1] "
                              "convert with np.round(x * 255).astype(np.uint8).")
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[3] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    elif not (images.ndim == 4 and images.shape[1] in (1, 3)):
        raise LogitscopeError(f"{where}: images have shape {images.shape}; expected (N, H, W, C), (N, C, H, W) "
                              "or (N, H, W) with C = 1 (grey) or 3 (RGB).")
    if images.shape[0] == 0 or min(images.shape[2:]) < 1:
        raise LogitscopeError(f"{where}: there are no images (shape {images.shape}).")
    return images.astype(np.float32) / 255.0


def check_labels(labels: np.ndarray, n: int, k: int | None, where: str) -> np.ndarray:
    """Integer labels (n,) in [0, k) as int64; k None means max + 1 (at most MAX_CLASSES)."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise LogitscopeError(f"{where}: labels must be integers (class indices), got {labels.dtype}.")
    if labels.shape != (n,):
        raise LogitscopeError(f"{where}: labels have shape {labels.shape} but there are {n} images: give one "
                              "label per image, shape (N,).")
    if labels.min() < 0 or (k is not None and labels.max() >= k):
        top = "" if k is None else f" < {k} (the number of class_names)"
        raise LogitscopeError(f"{where}: labels must be class indices 0 <= label{top}; found "
                              f"{labels.min()}..{labels.max()}.")
    if k is None and len(labels) and labels.max() >= MAX_CLASSES:
        check_class_count(int(labels.max()) + 1, where)
    return labels.astype(np.int64)


def check_usable(y_train: np.ndarray, y_test: np.ndarray, where: str) -> None:
    """Enough of the data to train and evaluate: two classes to train on, and a test split.

    Checked when the data is loaded, so that a dataset that would train but cannot be analysed is a
    message now, not a crash in a report or a page later.
    """
    if len(np.unique(y_train)) < 2:
        raise LogitscopeError(f"{where}: the training images are all of one class ({len(y_train)} images); a "
                              "classifier needs images of at least 2 classes.")
    if len(y_test) == 0:
        raise LogitscopeError(f"{where}: no image is left for the test split ({len(y_train)} training images). "
                              f"Without your own split, {TEST_FRACTION:.0%} of each class with 2 or more images is "
                              "the test split: give at least 2 images of a class, or give x_test/y_test (or a "
                              "test/ folder).")


def _class_names(arr: np.ndarray | None, where: str) -> list[str] | None:
    if arr is None:
        return None
    if arr.ndim != 1 or arr.dtype.kind not in "US" or len(arr) == 0:
        raise LogitscopeError(f"{where}: class_names must be a 1-D array of strings, e.g. np.array(['cat', 'dog']); "
                              f"got dtype {arr.dtype}, shape {arr.shape}.")
    return [c.decode() if isinstance(c, bytes) else str(c) for c in arr.tolist()]


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not zipfile.is_zipfile(path):
        raise LogitscopeError(f"{path} is not an .npz archive: save your arrays with np.savez(path, images=..., "
                              "labels=...).")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as exc:  # an object array: loading it would need pickle
        raise LogitscopeError(f"{path} holds pickled object arrays, which Logitscope never loads (pickle can run "
                              "code). Save plain arrays: images uint8, labels int, class_names as "
                              "np.array(names, dtype=str).") from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise LogitscopeError(f"{path} cannot be read ({exc}): save it again with np.savez.") from exc


def dataset_from_npz(name: str, path: Path) -> Dataset:
    """A Dataset from an .npz file in the format of this module's docstring."""
    arrays = _read_npz(path)
    keys = set(arrays) - {"class_names"}
    if keys not in NPZ_KEYS:
        raise LogitscopeError(f"{path} holds arrays {sorted(arrays)}; expected images and labels, or x_train, "
                              "y_train, x_test and y_test (plus optional class_names).")
    names = _class_names(arrays.get("class_names"), str(path))
    k = len(names) if names else None
    if keys == NPZ_KEYS[0]:
        x = to_nchw(arrays["images"], str(path))
        y = check_labels(arrays["labels"], len(x), k, str(path))
        tr, te = stratified_split(y)
        x_train, y_train, x_test, y_test = x[tr], y[tr], x[te], y[te]
    else:
        x_train, x_test = to_nchw(arrays["x_train"], f"{path} x_train"), to_nchw(arrays["x_test"], f"{path} x_test")
        if x_train.shape[1:] != x_test.shape[1:]:
            raise LogitscopeError(f"{path}: train images are {x_train.shape[1:]} but test images {x_test.shape[1:]} "
                                  "(C, H, W): both splits need the same image shape.")
        y_train = check_labels(arrays["y_train"], len(x_train), k, f"{path} y_train")
        y_test = check_labels(arrays["y_test"], len(x_test), k, f"{path} y_test")
    check_usable(y_train, y_test, str(path))
    k = k or int(max(y_train.max(), y_test.max() if len(y_test) else 0)) + 1
    check_class_count(k, str(path))
    return make_dataset(name, x_train, y_train, x_test, y_test, names or [str(i) for i in range(k)])


def _image_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                  and not f.name.startswith("."))


def _class_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _read_images(files: list[Path]) -> np.ndarray:
    """uint8 (N, H, W, C) from image files of one size; C = 1 if all are grey, else 3."""
    from PIL import Image, UnidentifiedImageError  # only for folder: data (start-up time of the app)

    images, first = [], None
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                images.append(im.copy())
        except (UnidentifiedImageError, OSError) as exc:
            raise LogitscopeError(f"{f} is not a readable PNG/JPEG image ({exc}): fix or remove it.") from exc
        if first is None:
            first = images[-1]
        elif images[-1].size != first.size:
            (w, h), (w0, h0) = images[-1].size, first.size
            raise LogitscopeError(f"{f} is {w}x{h} pixels but {files[0]} is {w0}x{h0}: all images must have the same "
                                  "size (Logitscope does not resize). Resize them first, e.g. with PIL's Image.resize.")
    grey = all(im.mode in ("1", "L", "LA") for im in images)
    arrays = [np.asarray(im.convert("L" if grey else "RGB"), dtype=np.uint8) for im in images]
    x = np.stack(arrays)
    return x[..., None] if grey else x


def _read_class_tree(root: Path, classes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    dirs = _class_dirs(root)
    found = [d.name for d in dirs]
    if classes is None:
        classes = found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise LogitscopeError(f"{root} has class folders {unknown} that the training folder lacks: the test split "
                              "can only use classes the training split has.")
    if not dirs:
        raise LogitscopeError(f"{root} has no class sub-folders: put each class's images in <root>/<class name>/.")
    files, labels = [], []
    for d in dirs:
        imgs = _image_files(d)
        if not imgs:
            raise LogitscopeError(f"Class folder {d} holds no PNG or JPEG images.")
        files += imgs
        labels += [classes.index(d.name)] * len(imgs)
    return _read_images(files), np.asarray(labels, dtype=np.int64), classes


def dataset_from_folder(name: str, root: Path) -> Dataset:
    """A Dataset from an image folder in the layout of this module's docstring."""
    if (root / "train").is_dir() and (root / "test").is_dir():
        x_train, y_train, classes = _read_class_tree(root / "train")
        x_test, y_test, _ = _read_class_tree(root / "test", classes)
        if x_train.shape[1:] != x_test.shape[1:]:
            raise LogitscopeError(f"{root}: train and test images differ in size or channels "
                                  f"({x_train.shape[1:]} vs {x_test.shape[1:]}, H, W, C): give them one size.")
        check_usable(y_train, y_test, str(root))
        return make_dataset(name, to_nchw(x_train, str(root)), y_train, to_nchw(x_test, str(root)), y_test, classes)
    x, y, classes = _read_class_tree(root)
    x = to_nchw(x, str(root))
    tr, te = stratified_split(y)
    check_usable(y[tr], y[te], str(root))
    return make_dataset(name, x[tr], y[tr], x[te], y[te], classes)


def folder_files(root: Path) -> list[Path]:
    """The image files a folder dataset is read from, after checking its layout (LogitscopeError if wrong).

    Only these are hashed into its name: a folder that is not a dataset (say "/") is refused at once
    instead of being walked, and a stray file the loader ignores does not rename the dataset.
    """
    trees = [root / "train", root / "test"] if (root / "train").is_dir() and (root / "test").is_dir() else [root]
    files = []
    for tree in trees:
        dirs = _class_dirs(tree)
        if not dirs:
            raise LogitscopeError(f"{tree} has no class sub-folders: put each class's images in "
                                  f"{tree}/<class name>/.")
        for d in dirs:
            images = _image_files(d)
            if not images:
                raise LogitscopeError(f"Class folder {d} holds no PNG or JPEG images.")
            files += images
    return files


def fingerprint(path: Path) -> str:
    """A short hash of a file's bytes, or of a folder dataset's image files (relative paths and bytes)."""
    h = hashlib.sha256()
    try:
        files = [path] if path.is_file() else sorted(folder_files(path))
        for f in files:
            if f != path:
                h.update(f.relative_to(path).as_posix().encode() + b"\0")
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    except OSError as exc:  # unreadable (permissions), or it changed while being read
        raise LogitscopeError(f"{path} cannot be read ({exc.strerror or exc}): check the path and its "
                              "permissions.") from exc
    return h.hexdigest()[:FINGERPRINT_LENGTH]


def _split_name(text: str) -> tuple[str, str | None]:
    """'x.npz@0123456789ab' -> ('x.npz', '0123456789ab'); no valid fingerprint -> (text, None)."""
    path, at, fp = text.rpartition("@")
    if at and re.fullmatch(f"[0-9a-f]{{{FINGERPRINT_LENGTH}}}", fp):
        return path, fp
    return text, None


def resolve_path(text: str, data_dir: str | None, kind: str) -> tuple[Path, str | None]:
    """The file or folder a name's path part points to, and its fingerprint if the name has one."""
    raw, fp = _split_name(text)
    path = Path(raw).expanduser()
    if not path.is_absolute() and data_dir:
        path = Path(data_dir).expanduser() / path
    path = path.resolve()
    wanted = "an .npz file" if kind == "npz" else "a folder with one sub-folder of images per class"
    if not (path.is_file() if kind == "npz" else path.is_dir()):
        raise LogitscopeError(f"{kind}:{raw}: {path} is not {wanted}. Give its path, absolute or relative to "
                              "--data-dir (or the working directory).")
    return path, fp


def own_data_name(name: str, data_dir: str | None = None) -> str:
    """The canonical name "<kind>:<absolute path>@<fingerprint>" of an "npz:..." or "folder:..." name."""
    kind, _, rest = name.partition(":")
    if kind not in ("npz", "folder"):
        raise LogitscopeError(f"{name!r} is not own data: use npz:<path> or folder:<path>.")
    path, _ = resolve_path(rest, data_dir, kind)
    return f"{kind}:{path}@{fingerprint(path)}"


def _open(kind: str, text: str, data_dir: str | None) -> Dataset:
    path, fp = resolve_path(text, data_dir, kind)
    if fp is not None and fingerprint(path) != fp:
        raise LogitscopeError(f"{path} has changed since it was named {kind}:{text}; models and logits cached for "
                              f"the old content do not apply. Use the new name {own_data_name(f'{kind}:{path}')}.")
    name = f"{kind}:{text}"
    return dataset_from_npz(name, path) if kind == "npz" else dataset_from_folder(name, path)


@register_scheme("npz", "your own images in an .npz file: npz:<path> (images uint8 + labels, or x_train/y_train/"
                        "x_test/y_test; optional class_names)")
def open_npz(path: str, data_dir: str | None = None) -> Dataset:
    return _open("npz", path, data_dir)


@register_scheme("folder", "your own PNG/JPEG images: folder:<path> with one sub-folder per class (or train/ and "
                           "test/ each with class sub-folders); all images one size")
def open_folder(path: str, data_dir: str | None = None) -> Dataset:
    return _open("folder", path, data_dir)
