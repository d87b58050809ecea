"""Opening a bundle (see `core.app.bundle_check` for the format): nothing in it is trusted before it is checked.

`read_manifest` checks the zip's size and member count and the manifest against its schema; `extract`
streams every member to disk in chunks through its SHA-256, never a member whole in memory, stopping at
its declared size, then checks every array file; `bundled_dataset` gives the images an unpacked bundle
carries. Any failure is one clear LogitscopeError (`_refuse`), never a traceback, and leaves nothing unpacked.
The limits are read from `bundle_check` at each call (`check.MAX_MEMBERS`), so they live in one place.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
import zlib
from dataclasses import replace
from pathlib import Path
from typing import IO

import numpy as np

from core.app import bundle_check as check
from core.app.bundle_check import FORMAT, VERSION, Invalid, check_arrays, check_manifest, read_images
from core.engine.data import Dataset, make_dataset
from core.errors import LogitscopeError
from core.storage import atomic_file, atomic_write

CHUNK = 1 << 20             # bytes per read while a member streams to disk


def _refuse(path: Path, why: str) -> LogitscopeError:
    return LogitscopeError(f"{path} is not a usable Logitscope bundle: {why}. Create it again with "
                           "python -m core bundle --dataset <name> --out <file>.")


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
    limits, and that the manifest has every field the app reads (`check_manifest`)."""
    path = Path(path)
    if not path.is_file():
        raise LogitscopeError(f"No bundle at {path}: check the path (LOGITSCOPE_DEMO or --bundle).")
    if path.stat().st_size > max_bundle_bytes():
        raise _refuse(path, f"it is larger than the {check.MAX_UNPACKED_MB} MB a bundle may unpack to")
    if not zipfile.is_zipfile(path):
        raise _refuse(path, "it is not a zip file (truncated or another kind of file)")
    with _open_zip(path) as z:
        if len(z.infolist()) > check.MAX_MEMBERS + 1:
            raise _refuse(path, f"it holds more than the {check.MAX_MEMBERS} files a bundle may hold")
        try:
            info = z.getinfo("manifest.json")
        except KeyError:
            raise _refuse(path, "it has no manifest.json") from None
        if info.file_size > check.MAX_MANIFEST_BYTES:
            raise _refuse(path, f"its manifest is larger than {check.MAX_MANIFEST_BYTES >> 20} MB")
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
        check_manifest(manifest)
    except Invalid as exc:
        raise _refuse(path, str(exc)) from None
    return manifest


def max_bundle_bytes() -> int:
    """The largest bundle file accepted: its unpacked limit, plus room for the zip's headers."""
    return check.MAX_UNPACKED_MB * 10**6 + check.MAX_MEMBERS * 1024


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
            check_arrays(dest, manifest)
        except Invalid as exc:
            raise _refuse(path, str(exc)) from None
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    atomic_write(dest / "bundle.json", json.dumps(manifest, indent=1).encode())
    return manifest


def bundled_dataset(dest: str | Path, manifest: dict) -> Dataset:
    """The dataset an extracted bundle carries: its evaluation images and, if bundled, its training images.

    The arrays are checked again (`extract` checked them once); a bad one raises LogitscopeError."""
    dest = Path(dest)
    try:
        x_test, y_test = read_images(dest / "data" / "test.npz", manifest, check.MAX_TEST_VALUES)
        if (dest / "data" / "train.npz").is_file():
            x_train, y_train = read_images(dest / "data" / "train.npz", manifest, check.LIVE_TRAIN_VALUES)
        else:
            x_train, y_train = np.zeros((0, *manifest["image_shape"]), np.float32), np.zeros(0, np.int64)
    except Invalid as exc:
        raise _refuse(dest, str(exc)) from None
    ds = make_dataset(manifest["dataset"], x_train, y_train, x_test, y_test, manifest["classes"])
    # the statistics of the whole training split, which the bundled models' Normalize layers were built with
    return replace(ds, mean=tuple(manifest["mean"]), std=tuple(manifest["std"]))
