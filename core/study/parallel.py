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


def run_units(fn: Callable[..., Any], units: Sequence[tuple], workers: int,
              progress: UnitProgress | None = None, cancel: Callable[[], bool] | None = None) -> list:
    """[fn(*unit, report=...) for unit in units] in `workers` processes (in this one if workers is 1).

    `report(what, fraction)` inside fn reaches `progress(unit index, what, fraction)` here, within
    POLL_SECONDS. Workers are spawned (not forked: safe with threads and on every platform), use
    cores() // workers threads each, and inherit this process's environment (the cache folder). The
    first unit that raises stops the run: units not started are cancelled, running ones finish, and its
    exception is raised here. `cancel` is polled as often: when it says so the workers are stopped at
    once (what they finished is in the cache, writes are atomic) and Cancelled is raised.
    """
    say = progress or (lambda index, what, fraction: None)
    if workers <= 1 or len(units) <= 1:
        out = []
        for i, u in enumerate(units):
            if cancel is not None and cancel():
                raise Cancelled("cancelled")
            out.append(fn(*u, report=lambda what, fraction, i=i: say(i, what, fraction)))
        return out
    ctx = mp.get_context("spawn")
    progress_queue = ctx.Queue()
    pool = ProcessPoolExecutor(min(workers, len(units)), mp_context=ctx, initializer=_init,
                               initargs=(progress_queue, max(1, cores() // workers), os.getpid()))
    futures: list[Future] = []
    try:
        with _plain_main():  # the workers start at the first submit
            futures = [pool.submit(_call, fn, i, u) for i, u in enumerate(units)]
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            _drain(progress_queue, progress)
            for f in done:
                f.result()  # the first failure stops the run
            if cancel is not None and cancel():
                raise Cancelled("cancelled")
        _drain(progress_queue, progress)
        return [f.result() for f in futures]
    except (KeyboardInterrupt, Cancelled):  # stop the workers now: what they finished is in the cache
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        progress_queue.close()
