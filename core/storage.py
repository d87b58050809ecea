"""Files in the cache that never break: atomic writes, cross-process locks, checksums, clear errors.

- `atomic_write(path, data)`: the bytes go to a hidden temporary file beside the target, are flushed
  to disk, and only then renamed over it. A reader (another process, another browser session) sees
  the old file or the new one, never half of one; a write that fails (full disk, cancelled job,
  read-only folder) leaves the old file as it was and no temporary behind. `atomic_file(path)` does
  the same for content written piece by piece (a download, an unpacked bundle member).
- `cache_lock(path, cancel)`: a `filelock` lock beside an entry. Two processes, or two threads of one
  process (two browser sessions), that want the same entry take turns: the first computes, the
  others wait and then read its result. A waiter whose job is cancelled stops waiting.
- `digest(tensors)`: the checksum stored in every entry and verified on every read.
- `verified(path, check)` / `report_corrupt(path, problem)`: a corrupt file is reported once (not on
  every read), and a good file is checked once until it changes.
A full disk or a read-only cache folder becomes a LogitscopeError that says what to do.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Mapping

import torch
from filelock import FileLock, Timeout

from core.errors import Cancelled, LogitscopeError

log = logging.getLogger(__name__)

_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}
LOCK_POLL = 0.2  # seconds between checks of the cancel flag while waiting for another process's lock


def write_error(exc: OSError, where: Path) -> LogitscopeError:
    """The message for a failed write under `where`: what happened and what to do."""
    if exc.errno in _FULL:
        return LogitscopeError(f"The disk holding {where} is full: free some space, or point LOGITSCOPE_CACHE to a "
                               "folder on another disk. Nothing already cached was changed.")
    if exc.errno in _DENIED:
        return LogitscopeError(f"Cannot write to {where} ({exc.strerror or 'permission denied'}): make the folder "
                               "writable, or point LOGITSCOPE_CACHE to a writable folder. What is already cached "
                               "can still be read.")
    return LogitscopeError(f"Cannot write to {where} ({exc.strerror or exc}): check that the folder exists and is "
                           "writable, or point LOGITSCOPE_CACHE to another folder.")


def _write_fd(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd` and push it to the disk (so a rename never exposes a short file)."""
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _umask() -> int:
    """The process's umask, read without changing it (os.umask sets it, a race with other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def _temporary(path: Path) -> tuple[int, str]:
    """A new hidden temporary file beside `path` (its folder created): (fd, name).

    mkstemp makes it private (0600); it gets the mode any new file gets (0666 less the umask), so
    a cache or a report written under a 022 umask can be shared as the README says.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    except OSError as exc:
        raise write_error(exc, path.parent) from exc
    with contextlib.suppress(OSError):  # a file system without modes (some network mounts) keeps its own
        os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp


def atomic_write(path: str | Path, data: bytes) -> Path:
    """Replace `path` by `data` all at once; raise LogitscopeError (the old file intact) if the disk says no."""
    path = Path(path)
    fd, tmp = _temporary(path)
    try:
        _write_fd(fd, data)
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(exc, path.parent) from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # gone already after a successful rename
    return path


class _Sink:
    """The file object `atomic_file` hands out: writes only, a failed write said as `write_error`."""

    def __init__(self, f: BinaryIO, where: Path):
        self._f, self._where = f, where

    def write(self, data: bytes) -> int:
        try:
            return self._f.write(data)
        except OSError as exc:
            raise write_error(exc, self._where) from exc


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[_Sink]:
    """`atomic_write` for content written piece by piece (downloads, unpacked members): never whole in memory.

    The file appears at `path`, complete and on disk, only when the block ends normally; an exception
    in the block leaves the old file (or none) and no temporary behind, and propagates unchanged.
    """
    path = Path(path)
    fd, tmp = _temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            yield _Sink(f, path.parent)
            try:
                f.flush()
                os.fsync(f.fileno())
            except OSError as exc:
                raise write_error(exc, path.parent) from exc
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise write_error(exc, path.parent) from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


@contextlib.contextmanager
def cache_lock(path: str | Path, cancel: Callable[[], bool] | None = None) -> Iterator[None]:
    """Hold the cross-process lock file `path` (created with its folder if needed).

    Without `cancel` it waits as long as the holder computes; with it, it polls `cancel()` every
    LOCK_POLL seconds and raises Cancelled when it turns true, so a cancelled job stops promptly
    even while another process holds the entry.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path))
        while True:
            try:
                lock.acquire(timeout=-1 if cancel is None else LOCK_POLL)
                break
            except Timeout:
                if cancel():
                    raise Cancelled("Cancelled while waiting for another process computing the same entry.")
    except OSError as exc:
        raise write_error(exc, path.parent) from exc
    try:
        yield
    finally:
        lock.release()


def digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes (in name order): the entry's checksum."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def signature(path: str | Path) -> tuple[int, int, int] | None:
    """A file's identity (inode, size, modification time in ns), None if it does not exist.

    Every write is a rename of a new file, so a rewritten entry always has a new signature.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


_lock = threading.Lock()
_reported: dict[str, tuple | None] = {}
_verdicts: dict[str, tuple[tuple, bool]] = {}


def report_corrupt(path: str | Path, problem: object, action: str = "recomputing it") -> None:
    """Log that a cache file is unusable, once per version of the file (not on every read)."""
    key, sig = str(path), signature(path)
    with _lock:
        if key in _reported and _reported[key] == sig:
            return
        _reported[key] = sig
    log.warning("Cache file %s is corrupt or unreadable (%s); %s.", path, problem, action)


def verified(path: str | Path, check: Callable[[Path], None], action: str = "recomputing it",
             expect: str = "") -> bool:
    """True if the file exists and `check(path)` does not raise; remembered until the file changes.

    A failing file is reported once (see report_corrupt) and counts as missing. `expect` names what
    the check expects of the file (a model key): verdicts for different expectations are kept apart.
    """
    key, sig = (str(path), expect), signature(path)
    if sig is None:
        return False
    with _lock:
        hit = _verdicts.get(key)
    if hit is not None and hit[0] == sig:
        return hit[1]
    try:
        check(Path(path))
        ok = True
    except Exception as exc:  # any way a file can be bad: the verdict is "recompute it"
        report_corrupt(path, exc, action)
        ok = False
    with _lock:
        _verdicts[key] = (sig, ok)
    return ok


def safe_part(text: str, what: str) -> str:
    """`text` if it is a plain file or folder name (no separators, not '.' or '..'), else LogitscopeError.

    Every cache path is built from such parts, so no key or name can point outside the cache.
    """
    if (not isinstance(text, str) or not text or text in (".", "..") or "/" in text or "\\" in text
            or "\0" in text or len(text) > 200):
        raise LogitscopeError(f"{what} {text!r} cannot name a cache file: use a key made of letters, digits, "
                              "'-', '_' and '.'.")
    return text
