"""The Ray executor: each task of a precompute or sweep is a Ray task, on this machine or a cluster.

The only module that imports Ray: the command line loads it for `--executor ray`, the app never does.

- `ray.init()` starts a local Ray on this machine (`address=None`), or joins a cluster (`address`, e.g.
  "auto" or "ray://head:10001"); a Ray already started in this process (a test session) is reused.
- A task asks for the resources it needs: `threads` CPUs (its torch threads), and one GPU when it runs
  on CUDA. The driver submits a task once the tasks it depends on have finished (a student after its
  teacher), so Ray schedules only what can run.
- With a shared filesystem (`shared_fs=True`: the cache at the same path on every node) workers write
  into the one cache, with the same atomic writes and per-entry locks as a local run. Without one,
  a task runs against a private cache folder, gets the checkpoints it needs from the driver, and
  returns the files it wrote; the driver writes them (`core.study.executors`).
- A task whose worker dies (killed, out of memory, a lost node) is retried by Ray (`max_retries`) and
  reported once (`retried`). An exception in a task stops the run and is raised here.
- Ctrl-C (KeyboardInterrupt) or `cancel()` cancels the outstanding tasks: each is interrupted first,
  so its atomic writes clean up; one still running after GRACE_SECONDS is killed. Entries are renamed
  into place whole, so the cache holds finished entries only, and a re-run resumes.

Example:
    >>> ex = RayExecutor(threads=1)          # a local Ray with every core of this machine
    >>> out = fanout.run(ex, "digits", recipes)
    >>> ex.close()
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import ray
from ray.exceptions import GetTimeoutError, RayError, RayTaskError, TaskCancelledError, WorkerCrashedError

import core
from core.config import cache_dir
from core.errors import Cancelled, LogitscopeError
from core.study.executors import (
    NOT_SHIPPED,
    Task,
    address_parts,
    cache_at,
    call_unit,
    collect_files,
    read_files,
    write_files,
)
from core.study.parallel import UnitProgress

log = logging.getLogger(__name__)

MAX_RETRIES = 3        # attempts after a lost worker; an exception in the task itself is not retried
POLL_SECONDS = 0.25    # how often the driver collects progress and checks for Ctrl-C
REPORT_SECONDS = 0.5   # how often a task sends its progress to the driver
ADDRESS_TIMEOUT = 5.0  # seconds to reach --ray-address before saying it does not answer
GRACE_SECONDS = 5.0    # after a cancel: time for interrupted tasks to unwind before they are killed
PROJECT_ROOT = str(Path(core.__file__).resolve().parent.parent)


@ray.remote(num_cpus=0)
class Board:
    """The tasks' notice board: attempts (a retry starts attempt 2), worker pids and the latest progress."""

    def __init__(self) -> None:
        self.attempts: dict[int, int] = {}
        self.pids: dict[int, int] = {}
        self.reports: dict[int, tuple[str, float]] = {}

    def start(self, index: int, pid: int) -> int:
        self.attempts[index] = self.attempts.get(index, 0) + 1
        self.pids[index] = pid
        return self.attempts[index]

    def report(self, index: int, what: str, fraction: float) -> None:
        self.reports[index] = (what, fraction)

    def snapshot(self) -> tuple[dict, dict, dict]:
        return dict(self.reports), dict(self.attempts), dict(self.pids)


def _node_zoo_folder() -> Path:
    """Where RobustBench downloads stay on a worker's machine when there is no shared cache."""
    folder = Path(tempfile.gettempdir()) / "logitscope-zoo"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@ray.remote
def _run(fn: Callable[..., Any], args: tuple, index: int, threads: int, cache: str, shared_fs: bool,
         board: Any, needs: dict[str, bytes]) -> tuple[Any, dict[str, bytes], int]:
    """One task on a worker: (its result, the files it wrote when there is no shared fs, its attempt number)."""
    attempt = ray.get(board.start.remote(index, os.getpid()))
    last = [0.0]

    def report(what: str, fraction: float) -> None:
        now = time.monotonic()
        if now - last[0] >= REPORT_SECONDS or fraction >= 1.0:
            last[0] = now
            board.report.remote(index, what, float(fraction))

    if shared_fs:
        with cache_at(cache):
            return call_unit(fn, args, threads, report), {}, attempt
    with tempfile.TemporaryDirectory(prefix="logitscope-task-") as tmp:
        root = Path(tmp)
        zoo = root / NOT_SHIPPED[0]
        zoo.parent.mkdir(parents=True, exist_ok=True)
        zoo.symlink_to(_node_zoo_folder(), target_is_directory=True)
        write_files(needs, root)
        with cache_at(root):
            result = call_unit(fn, args, threads, report)
        files = {k: v for k, v in collect_files(root).items() if k not in needs}
        return result, files, attempt


def check_address(address: str, timeout: float = ADDRESS_TIMEOUT) -> None:
    """Raise LogitscopeError unless something accepts connections at a "host:port" or "ray://host:port" address.

    Ray itself retries an unreachable address for minutes; a typo should fail at once, with what to do.
    "auto" (a cluster started on this node) is left to Ray.
    """
    if address == "auto":
        return
    host, port = address_parts(address)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise LogitscopeError(f"Nothing answers at --ray-address {address} ({exc.strerror or exc}): start the "
                              "cluster there with `ray start --head`, or check the address; --executor local needs "
                              "no cluster.") from exc


def init(address: str | None = None, num_cpus: int | None = None) -> None:
    """`ray.init` as Logitscope needs it: no dashboard, quiet, and workers that import this checkout.

    `address` None starts a local Ray with `num_cpus` (default: every core); otherwise it joins that cluster,
    whose nodes must hold Logitscope at the same path (e.g. on the shared filesystem).
    """
    ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
             logging_level=logging.WARNING, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": PROJECT_ROOT}})


class RayExecutor:
    """Tasks as Ray tasks; see the module docstring."""

    name = "ray"

    def __init__(self, address: str | None = None, shared_fs: bool = True, threads: int = 1,
                 max_retries: int = MAX_RETRIES, num_cpus: int | None = None):
        self.address, self.shared_fs, self.threads = address, shared_fs, max(1, threads)
        self.max_retries, self.num_cpus = max_retries, num_cpus
        self.retried: dict[str, int] = {}  # task label -> attempts it took
        self.started_here = False
        self.start_seconds = 0.0
        self.board: Any = None  # the running run's Board (tests read the workers' pids from it)

    def start(self) -> float:
        """Start (or join) Ray unless this process is connected already; the seconds it took."""
        if self.address is not None:
            check_address(self.address)
        if ray.is_initialized():
            return 0.0
        t0 = time.perf_counter()
        try:
            init(self.address, self.num_cpus)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
            raise LogitscopeError(f"Cannot start or reach {where} ({exc}). Check --ray-address (e.g. auto on a node of "
                                  "a running cluster, after `ray start --head`), or use --executor local.") from exc
        self.started_here = True
        self.start_seconds = time.perf_counter() - t0
        return self.start_seconds

    def close(self) -> None:
        """Shut down the Ray this executor started (a Ray started by the caller stays up)."""
        if self.started_here and ray.is_initialized():
            ray.shutdown()
        self.started_here = False

    def run(self, tasks: Sequence[Task], progress: UnitProgress | None = None,
            cancel: Callable[[], bool] | None = None) -> list:
        """[task.fn(*task.args) for task in tasks] as Ray tasks, in dependency order; see the module docstring."""
        self.start()
        say = progress or (lambda index, what, fraction: None)
        n = len(tasks)
        results: list[Any] = [None] * n
        finished: set[int] = set()
        running: dict[Any, int] = {}
        submitted: set[int] = set()
        board = self.board = Board.remote()
        cache = str(cache_dir())
        seen: dict[int, tuple[str, float]] = {}
        try:
            while len(finished) < n:
                for i, t in enumerate(tasks):
                    if i not in submitted and set(t.after) <= finished:
                        needs = {} if self.shared_fs else read_files(t.needs)
                        options = {"num_cpus": self.threads, "num_gpus": 1 if t.gpu else 0,
                                   "max_retries": self.max_retries, "retry_exceptions": False}
                        ref = _run.options(**options).remote(t.fn, t.args, i, self.threads, cache, self.shared_fs,
                                                              board, needs)
                        running[ref] = i
                        submitted.add(i)
                if not running:
                    raise ValueError("the tasks wait on each other: their `after` lists form a cycle")
                done, _ = ray.wait(list(running), num_returns=1, timeout=POLL_SECONDS)
                if done:  # and whatever else has finished meanwhile
                    done, _ = ray.wait(list(running), num_returns=len(running), timeout=0)
                self._progress(board, seen, say)
                for ref in done:
                    i = running.pop(ref)
                    results[i] = self._collect(ref, tasks[i])
                    finished.add(i)
                    say(i, "done", 1.0)
                if cancel is not None and cancel():
                    raise Cancelled("cancelled; finished tasks stay in the cache.")
            return results
        except BaseException:  # Ctrl-C, cancel, or a failed task: nothing else of this run goes on
            self._cancel(list(running))
            raise
        finally:
            ray.kill(board)
            self.board = None

    def _progress(self, board: Any, seen: dict, say: UnitProgress) -> None:
        try:
            reports, _, _ = ray.get(board.snapshot.remote(), timeout=POLL_SECONDS * 4)
        except GetTimeoutError:
            return
        for i, report in reports.items():
            if seen.get(i) != report:
                seen[i] = report
                say(i, *report)

    def _collect(self, ref: Any, task: Task) -> Any:
        try:
            result, files, attempt = ray.get(ref)
        except RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
            if isinstance(cause, (LogitscopeError, Cancelled)):
                raise cause from None
            raise LogitscopeError(f"{task.label} failed on a Ray worker: {type(cause).__name__}: {cause}") from exc
        except WorkerCrashedError as exc:
            raise LogitscopeError(f"{task.label}: its worker died {self.max_retries + 1} times (out of memory, or "
                                  "killed); finished tasks are in the cache, run again to resume.") from exc
        except RayError as exc:
            raise LogitscopeError(f"{task.label}: Ray could not run it ({type(exc).__name__}: {exc}); finished "
                                  "tasks are in the cache, run again to resume.") from exc
        if attempt > 1:
            self.retried[task.label] = attempt
            log.warning("%s was retried after its worker was lost (attempt %d); it is complete now.", task.label, attempt)
        if files:
            write_files(files)
        return result

    def _cancel(self, refs: list) -> None:
        """Interrupt every outstanding task; kill the ones that do not stop within GRACE_SECONDS."""
        for ref in refs:
            ray.cancel(ref, force=False)
        deadline = time.monotonic() + GRACE_SECONDS
        pending = refs
        while pending and time.monotonic() < deadline:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.2)
        for ref in pending:
            try:
                ray.cancel(ref, force=True)
            except (RayError, TaskCancelledError, ValueError):
                pass
