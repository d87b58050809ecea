"""A process-wide runner for long jobs (training, attacks, distillation runs) on background threads.

A job is keyed by *what it computes*: submitting a key that is already queued or running returns
the existing job, so two browser sessions (or two clicks) never run the same computation twice.
Jobs run one at a time by default: the models are small and the CPU is shared, so a queue keeps
each job fast and its time-left estimate honest.

The job function receives a `JobContext` to report progress and to poll for cancellation; errors
are captured on the job (never raised into the caller's thread) and shown by the page that asked.

Example:
    >>> job = submit("train:digits", lambda ctx: train_all(ctx), label="Training the digits models")
    >>> job.snapshot().fraction  # 0.0 .. 1.0, read by a page every second
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from core.errors import Cancelled, LogitscopeError

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)


@dataclass(frozen=True)
class JobState:
    """A consistent copy of a job's state, safe to read from any thread."""

    key: str
    label: str
    status: str
    stage: str          # what runs now, e.g. "training pgd-at (2 of 10): epoch 3/20"
    fraction: float     # of the whole job, in [0, 1]
    elapsed: float      # seconds since the job started running (0 while queued)
    eta: float | None   # estimated seconds left, None when unknown
    error: str | None   # the message to show when status is "failed"
    finished_at: float | None

    @property
    def active(self) -> bool:
        return self.status in (QUEUED, RUNNING)


@dataclass
class Job:
    """One background computation. Read it through `snapshot()`; stop it with `cancel()`."""

    key: str
    label: str
    fn: Callable[["JobContext"], Any]
    meta: dict = field(default_factory=dict)  # what the submitter wants to find again (e.g. what it covers)
    status: str = QUEUED
    stage: str = "waiting for another job to finish"
    fraction: float = 0.0
    eta: float | None = None
    error: str | None = None
    result: Any = None
    started_at: float | None = None
    finished_at: float | None = None
    _cancel: threading.Event = field(default_factory=threading.Event)
    _done: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    thread: threading.Thread | None = None

    def snapshot(self) -> JobState:
        with self._lock:
            elapsed = 0.0 if self.started_at is None else (self.finished_at or time.time()) - self.started_at
            return JobState(self.key, self.label, self.status, self.stage, self.fraction, elapsed, self.eta,
                            self.error, self.finished_at)

    def cancel(self) -> None:
        """Ask the job to stop; it stops at its next progress report (within a training batch)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job finished; True if it did within `timeout` seconds."""
        return self._done.wait(timeout)


class JobContext:
    """What a job function gets: `report(stage, fraction)` and `check()` for cancellation."""

    def __init__(self, job: Job):
        self._job = job

    def report(self, stage: str | None = None, fraction: float | None = None, eta: float | None = None) -> None:
        """Update what the job is doing and how far it is; raises Cancelled if a cancel was asked."""
        job = self._job
        with job._lock:
            if stage is not None:
                job.stage = stage
            if fraction is not None:
                job.fraction = min(max(float(fraction), 0.0), 1.0)
                elapsed = time.time() - (job.started_at or time.time())
                job.eta = eta if eta is not None else (
                    elapsed * (1 - job.fraction) / job.fraction if job.fraction > 0.02 else None)
        self.check()

    def check(self) -> None:
        if self._job.cancelled:
            raise Cancelled(f"{self._job.label}: cancelled.")

    @property
    def cancelled(self) -> bool:
        return self._job.cancelled


_registry: dict[str, Job] = {}
_registry_lock = threading.Lock()
_slots = threading.Semaphore(1)  # jobs that may compute at the same time
KEEP_FINISHED = 256  # finished jobs kept for their pages (result or error); older ones are dropped


def _run(job: Job) -> None:
    with _slots:
        with job._lock:
            if job._cancel.is_set():
                job.status, job.stage, job.finished_at = CANCELLED, "cancelled before it started", time.time()
                job._done.set()
                return
            job.status, job.stage, job.started_at = RUNNING, "starting", time.time()
        try:
            result = job.fn(JobContext(job))
            status, error = DONE, None
        except Cancelled:
            result, status, error = None, CANCELLED, None
        except LogitscopeError as exc:
            result, status, error = None, FAILED, str(exc)
        except Exception as exc:  # a bug, not a user error: keep the traceback in the log
            log.exception("Job %s failed", job.key)
            result, status, error = None, FAILED, (f"{job.label} failed unexpectedly ({type(exc).__name__}: {exc}). "
                                                   "Try again; if it persists, delete the cache folder and restart.")
        with job._lock:
            job.result, job.status, job.error, job.finished_at = result, status, error, time.time()
            if status == DONE:
                job.fraction, job.stage, job.eta = 1.0, "done", 0.0
            elif status == CANCELLED:
                job.stage = "cancelled"
        job._done.set()


def submit(key: str, fn: Callable[[JobContext], Any], label: str, restart: bool = True,
           meta: dict | None = None) -> Job:
    """Start `fn` on a background thread under `key`, or return the job already queued or running.

    A finished job under the same key is replaced by a new run when `restart` is True, and
    returned as is otherwise (so a page can read a finished job's result or error).
    """
    with _registry_lock:
        old = _registry.get(key)
        if old is not None and (old.status in (QUEUED, RUNNING) or not restart):
            return old
        job = Job(key, label, fn, dict(meta or {}))
        job.thread = threading.Thread(target=_run, args=(job,), name=f"logitscope-job-{key[:40]}", daemon=True)
        _registry.pop(key, None)  # re-insert, so the registry stays in submission order
        _registry[key] = job
        finished = [k for k, j in _registry.items() if j.status in FINISHED]
        for k in finished[:max(0, len(finished) - KEEP_FINISHED)]:  # a long-running server stays bounded
            del _registry[k]
    job.thread.start()
    return job


def get(key: str) -> Job | None:
    """The job last submitted under `key`, if any (running or finished)."""
    with _registry_lock:
        return _registry.get(key)


def active() -> list[Job]:
    """Queued and running jobs, oldest first."""
    with _registry_lock:
        return [j for j in _registry.values() if j.status in (QUEUED, RUNNING)]


def find(predicate: Callable[[Job], bool], active_only: bool = True) -> Job | None:
    """The newest job (queued or running, unless active_only is False) for which predicate holds."""
    with _registry_lock:
        jobs = list(_registry.values())
    for j in reversed(jobs):
        if (not active_only or j.status in (QUEUED, RUNNING)) and predicate(j):
            return j
    return None


def forget(key: str) -> None:
    """Drop a finished job from the registry (a running one is left alone)."""
    with _registry_lock:
        job = _registry.get(key)
        if job is not None and job.status in FINISHED:
            del _registry[key]


def cancel_all(wait: float | None = 30.0) -> None:
    """Cancel every queued or running job and wait for their threads (tests and shutdown)."""
    jobs = active()
    for j in jobs:
        j.cancel()
    for j in jobs:
        j.wait(wait)


def clear() -> None:
    """Cancel all jobs and empty the registry."""
    cancel_all()
    with _registry_lock:
        _registry.clear()


def format_seconds(seconds: float | None) -> str:
    """'42 s', '3 min 05 s' or 'unknown': durations as a person reads them."""
    if seconds is None or seconds != seconds:
        return "unknown"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60:02d} s"
