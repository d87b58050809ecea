"""Executors: where the tasks of a precompute or a sweep run. `LocalExecutor` here, `RayExecutor` in
`core.study.executor_ray` (the only module that imports Ray, so nothing else pays for it).

A `Task` is a module-level function with its arguments, the tasks it waits for (`after`), the cache
files it reads that earlier tasks (or runs) wrote (`needs`: a student's teacher, a model to evaluate),
and whether it wants a GPU. Every task writes its results into the cache, atomically and under the
entry's lock, and is idempotent: a task whose results are cached finds them and does nothing, so a
re-run (or a retry after a lost worker) resumes.

Results are bit-identical across executors when the tasks run with the same number of CPU threads
(`threads`): torch's CPU kernels split their sums by thread, so 1 and 2 threads give different last bits.

Without a shared filesystem a task runs against a private cache folder: `needs` are copied in, and the
files it writes come back to the driver (`collect_files`), which writes them into the one cache
(`write_files`), with the same atomic writes.

Example:
    >>> tasks = [Task("train pgd-at", train, (recipe,)), Task("evaluate pgd-at", evaluate, (...), after=(0,))]
    >>> LocalExecutor(threads=2).run(tasks, progress=lambda i, what, f: print(i, what, f))
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Protocol, Sequence

import torch

from core.config import cache_dir
from core.errors import LogitscopeError
from core.storage import atomic_write
from core.study import parallel

CACHE_ENV = "LOGITSCOPE_CACHE"
NOT_SHIPPED = ("models/robustbench",)  # downloads stay on the worker's machine (a node-local folder)


@dataclass(frozen=True)
class Task:
    """One unit of work: `fn(*args, report=...)`, after the tasks `after` (indices) have finished."""

    label: str
    fn: Callable[..., Any]
    args: tuple
    after: tuple[int, ...] = ()
    needs: tuple[str, ...] = ()  # cache files (relative, '/'-separated) the task reads: shipped without a shared fs
    gpu: bool = False


class Executor(Protocol):
    name: str
    threads: int

    def run(self, tasks: Sequence[Task], progress: parallel.UnitProgress | None = None,
            cancel: Callable[[], bool] | None = None) -> list: ...


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with `n` torch CPU threads, then restore the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def call_unit(fn: Callable[..., Any], args: tuple, threads: int, report: Callable[[str, float], None]) -> Any:
    """`fn(*args, report=report)` with `threads` torch CPU threads: how every executor runs a task."""
    with torch_threads(threads):
        return fn(*args, report=report)


class LocalExecutor:
    """Tasks one after another in this process (dependency order), each with `threads` CPU threads."""

    name = "local"

    def __init__(self, threads: int | None = None):
        self.threads = threads or parallel.cores()
        self.retried: dict[str, int] = {}  # nothing is retried in one process: a failure stops the run

    def run(self, tasks: Sequence[Task], progress: parallel.UnitProgress | None = None,
            cancel: Callable[[], bool] | None = None) -> list:
        units = [(t.fn, t.args, self.threads) for t in tasks]
        return parallel.run_units(call_unit, units, workers=1, progress=progress, cancel=cancel,
                                  after=[t.after for t in tasks])


@contextlib.contextmanager
def cache_at(folder: str | Path) -> Iterator[None]:
    """Point this process's cache (LOGITSCOPE_CACHE) at `folder` for a while."""
    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(folder)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = before


def _relative(path: str) -> PurePosixPath:
    rel = PurePosixPath(path)
    if rel.is_absolute() or not rel.parts or any(p in ("", ".", "..") for p in rel.parts):
        raise LogitscopeError(f"A task returned the file {path!r}, which is not a plain path inside the cache.")
    return rel


def read_files(paths: Sequence[str], root: Path | None = None) -> dict[str, bytes]:
    """The cache files `paths` (relative) that exist under `root` (default: this cache), by relative path."""
    root = root or cache_dir()
    return {p: (root / _relative(p)).read_bytes() for p in paths if (root / _relative(p)).is_file()}


def collect_files(root: Path) -> dict[str, bytes]:
    """Every file a task wrote under its private cache `root`, except locks and node-local downloads."""
    out = {}
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root).as_posix()
        if f.is_file() and not f.name.endswith(".lock") and not rel.startswith(NOT_SHIPPED):
            out[rel] = f.read_bytes()
    return out


def write_files(files: dict[str, bytes], root: Path | None = None) -> int:
    """Write a task's returned files into the cache (atomically) unless the same bytes are there. Returns the count."""
    root = root or cache_dir()
    written = 0
    for rel, data in files.items():
        path = root / _relative(rel)
        if not path.is_file() or path.read_bytes() != data:
            atomic_write(path, data)
            written += 1
    return written


def address_parts(address: str) -> tuple[str, int]:
    """(host, port) of a Ray address "HOST:PORT" or "ray://HOST:PORT"; LogitscopeError with the forms it takes."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LogitscopeError(f"--ray-address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379, the head node's "
                              "address that `ray start --head` prints), ray://HOST:10001 or auto.")
    return host, int(port)
