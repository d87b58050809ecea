"""Independent units of a study, side by side in worker processes with one CPU thread each.

The digits models are tiny: one forward and backward pass of an attack batch takes a few milliseconds,
too little work for two threads of one process to share. On two cores, AutoAttack on the PGD-AT model
ran no faster with two threads than with one (measured: 11 s with one thread, 19 s wall and 31 s of CPU
with two, on a loaded machine). Two processes of one thread each keep both cores busy instead, so
`reproduce` hands each model's work (training, PGD grid, evidence) to a pool of them.

A unit writes its results into the cache (checkpoints, logits entries), which is safe across processes:
writes are atomic and every entry and checkpoint has its lock, so a student whose teacher another worker
is still training waits for that checkpoint, then reuses it. The driver reads the results back.

Example:
    >>> results = run_units(fn, [(a,), (b,)], workers=2, progress=lambda i, what, f: print(i, what, f))
    # == [fn(a, report=...), fn(b, report=...)]; fn is a module-level function, units are picklable
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue as queues
import sys
import threading
import time
import types
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterator, Sequence

import torch

from core.errors import Cancelled

MAX_WORKERS = 8  # each worker holds its own torch (about 0.4 GB resident)
POLL_SECONDS = 0.2  # how often the driver forwards the workers' progress
UnitProgress = Callable[[int, str, float], None]  # (unit index, what it does now, fraction of that done)

_worker = threading.local()  # the progress queue of a worker process


def cores() -> int:
    """CPU cores this process may use (its affinity where the platform says, else the machine's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def default_workers(device: str | torch.device, n_units: int) -> int:
    """One worker per core on a CPU (at most MAX_WORKERS and n_units); on an accelerator, this process only."""
    if torch.device(device).type != "cpu":
        return 1
    return max(1, min(cores(), MAX_WORKERS, n_units))


def _init(progress_queue, threads: int, parent: int) -> None:
    torch.set_num_threads(threads)
    _worker.queue, _worker.parent = progress_queue, parent


def _call(fn: Callable[..., Any], index: int, args: tuple) -> Any:
    q, parent = _worker.queue, _worker.parent

    def report(what: str, fraction: float) -> None:
        if os.getppid() != parent:  # the driver is gone (a stopped app server, a killed CLI): stop with it
            os._exit(1)
        q.put((index, what, float(fraction)))

    return fn(*args, report=report)


def _drain(progress_queue, progress: UnitProgress | None) -> None:
    last = {}
    while True:
        try:
            index, what, fraction = progress_queue.get_nowait()
        except queues.Empty:
            break
        last[(index, what)] = fraction
    for (index, what), fraction in last.items():
        if progress is not None:
            progress(index, what, fraction)


@contextlib.contextmanager
def _plain_main() -> Iterator[None]:
    """Start workers without re-running this process's main script in them.

    A spawned worker imports the parent's `__main__` again, by module name when it has one (`python -m
    core`: harmless) or else from its file. In the app that file is the Streamlit page script, which would
    then run (bare) in every worker: seconds of imports, and a page that may submit jobs of its own. While
    the workers start, a main without a name or a file stands in for it; the units are functions of real
    modules, which the workers import as usual.
    """
    main = sys.modules.get("__main__")
    if main is None or getattr(getattr(main, "__spec__", None), "name", None) is not None:
        yield
        return
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _next_ready(n: int, after: list[set[int]], finished: set[int], taken: set[int]) -> int | None:
    """The first unit (in the given order: the caller's priorities) not taken yet whose dependencies are done."""
    return next((i for i in range(n) if i not in taken and after[i] <= finished), None)


def run_units(fn: Callable[..., Any], units: Sequence[tuple], workers: int,
              progress: UnitProgress | None = None, cancel: Callable[[], bool] | None = None,
              after: Sequence[Sequence[int]] | None = None) -> list:
    """[fn(*unit, report=...) for unit in units] in `workers` processes (in this one if workers is 1).

    Units start in the given order (the caller's priorities), except that a unit waits for the units
    `after[i]` lists (indices) to finish: a free worker takes the first unit that is ready, so it never
    sits waiting on another worker's lock (a student whose teacher is still training) while other work
    could run. `report(what, fraction)` inside fn reaches `progress(unit index, what, fraction)` here,
    within POLL_SECONDS. Workers are spawned (not forked: safe with threads and on every platform), use
    cores() // workers threads each, and inherit this process's environment (the cache folder). The
    first unit that raises stops the run: units not started are not started, running ones finish, and its
    exception is raised here. `cancel` is polled as often: when it says so the workers are stopped at
    once (what they finished is in the cache, writes are atomic) and Cancelled is raised.
    """
    say = progress or (lambda index, what, fraction: None)
    n = len(units)
    deps = [set(a) for a in after] if after is not None else [set() for _ in units]
    if len(deps) != n or any(not 0 <= j < n or j == i for i, d in enumerate(deps) for j in d):
        raise ValueError("after: one list of other units' indices per unit")
    results: list[Any] = [None] * n
    finished: set[int] = set()
    if workers <= 1 or n <= 1:
        while len(finished) < n:
            i = _next_ready(n, deps, finished, finished)
            if i is None:
                raise ValueError("the units wait on each other: their `after` lists form a cycle")
            if cancel is not None and cancel():
                raise Cancelled("cancelled")
            results[i] = fn(*units[i], report=lambda what, fraction, i=i: say(i, what, fraction))
            finished.add(i)
        return results
    ctx = mp.get_context("spawn")
    progress_queue = ctx.Queue()
    pool = ProcessPoolExecutor(min(workers, n), mp_context=ctx, initializer=_init,
                               initargs=(progress_queue, max(1, cores() // workers), os.getpid()))
    running: dict[Future, int] = {}
    taken: set[int] = set()
    try:
        while len(finished) < n:
            while len(running) < min(workers, n):
                i = _next_ready(n, deps, finished, taken)
                if i is None:
                    break
                with _plain_main():  # a worker may start at any submit
                    running[pool.submit(_call, fn, i, units[i])] = i
                taken.add(i)
            if not running:
                raise ValueError("the units wait on each other: their `after` lists form a cycle")
            done, _ = wait(running, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            _drain(progress_queue, progress)
            for f in done:
                i = running.pop(f)
                results[i] = f.result()  # the first failure stops the run
                finished.add(i)
            if cancel is not None and cancel():
                raise Cancelled("cancelled")
        time.sleep(POLL_SECONDS)  # a worker's last reports may trail its result (the queue's feeder thread)
        _drain(progress_queue, progress)
        return results
    except (KeyboardInterrupt, Cancelled):  # stop the workers now: what they finished is in the cache
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        progress_queue.close()
