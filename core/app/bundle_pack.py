"""Packing a bundle: an in-memory zip whose members are exactly the bytes that passed their checks.

`core.app.bundle.write_bundle` decides what goes in; a `Packer` reads each cache file once, checks a private
copy of those bytes with the cache's own check (so nothing can change them in between), packs exactly
those bytes and records their SHA-256 and size for the manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Callable

from core.errors import LogitscopeError


class Packer:
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

    def __enter__(self) -> Packer:
        return self

    def __exit__(self, *exc) -> None:
        self.zip.close()  # a no-op after `close`; after an error, the half-packed bundle is dropped
