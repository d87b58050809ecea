"""The background job runner: one job per key, progress, cancel, errors captured, a queue of one."""

from __future__ import annotations

import threading

import pytest

from core.app import jobs
from core.errors import LogitscopeError


@pytest.fixture(autouse=True)
def clean_registry():
    jobs.clear()
    yield
    jobs.clear()


def test_a_job_runs_in_the_background_and_keeps_its_result():
    seen = []

    def work(ctx):
        for i in range(4):
            ctx.report(f"step {i}", (i + 1) / 4)
            seen.append(threading.current_thread().name)
        return 42

    job = jobs.submit("answer", work, "Computing the answer")
    assert job.wait(10)
    s = job.snapshot()
    assert (s.status, s.fraction, s.stage, job.result) == (jobs.DONE, 1.0, "done", 42)
    assert s.finished_at is not None and s.elapsed >= 0
    assert all(name.startswith("logitscope-job-") for name in seen)  # not the caller's thread


def test_the_same_key_never_runs_twice_at_once():
    release, runs = threading.Event(), []

    def work(ctx):
        runs.append(1)
        release.wait(10)

    first = jobs.submit("same", work, "first")
    second = jobs.submit("same", work, "second")
    assert second is first
    release.set()
    assert first.wait(10)
    assert runs == [1]
    third = jobs.submit("same", work, "again")  # a finished job is replaced by a new run by default
    assert third is not first and third.wait(10) and runs == [1, 1]
    assert jobs.submit("same", work, "kept", restart=False) is third


def test_cancel_stops_a_running_job_at_its_next_report():
    started = threading.Event()

    def work(ctx):
        started.set()
        while True:
            ctx.report("spinning", 0.5)

    job = jobs.submit("spin", work, "Spinning")
    assert started.wait(10)
    job.cancel()
    assert job.wait(10)
    assert job.snapshot().status == jobs.CANCELLED


def test_jobs_queue_one_at_a_time_and_a_queued_job_can_be_cancelled():
    release, started = threading.Event(), threading.Event()
    first = jobs.submit("busy", lambda ctx: (started.set(), release.wait(10)), "busy")
    assert started.wait(10)
    queued = jobs.submit("waiting", lambda ctx: "ran", "waiting")
    assert queued.snapshot().status == jobs.QUEUED
    assert {j.key for j in jobs.active()} == {"busy", "waiting"}
    queued.cancel()
    release.set()
    assert first.wait(10) and queued.wait(10)
    assert queued.snapshot().status == jobs.CANCELLED and queued.result is None


def test_user_errors_are_kept_as_messages_and_bugs_do_not_escape():
    def user_error(ctx):
        raise LogitscopeError("epsilon must be positive: pick another value.")

    def bug(ctx):
        raise ZeroDivisionError("division by zero")

    a = jobs.submit("user", user_error, "User error")
    b = jobs.submit("bug", bug, "Buggy job")
    assert a.wait(10) and b.wait(10)
    assert a.snapshot().status == jobs.FAILED and a.snapshot().error == "epsilon must be positive: pick another value."
    assert b.snapshot().status == jobs.FAILED
    assert "Buggy job failed unexpectedly (ZeroDivisionError" in b.snapshot().error


def test_find_uses_metadata_and_forget_drops_finished_jobs():
    job = jobs.submit("meta", lambda ctx: None, "with meta", meta={"covers": frozenset({"a", "b"})})
    assert job.wait(10)
    assert jobs.find(lambda j: {"a"} <= j.meta.get("covers", set())) is None  # finished: not active
    assert jobs.find(lambda j: {"a"} <= j.meta.get("covers", set()), active_only=False) is job
    jobs.forget("meta")
    assert jobs.get("meta") is None


def test_progress_reports_are_clamped_and_give_an_estimate():
    release = threading.Event()
    checked = {}

    def work(ctx):
        ctx.report("half", 0.5)
        checked["state"] = jobs.get("eta").snapshot()
        ctx.report(fraction=7.0)
        checked["clamped"] = jobs.get("eta").snapshot().fraction
        release.wait(10)

    job = jobs.submit("eta", work, "estimating")
    release.set()
    assert job.wait(10)
    assert checked["state"].stage == "half" and checked["state"].eta is not None and checked["state"].eta >= 0
    assert checked["clamped"] == 1.0


@pytest.mark.parametrize("seconds, text", [(None, "unknown"), (float("nan"), "unknown"), (0.4, "0 s"),
                                           (42, "42 s"), (185, "3 min 05 s")])
def test_format_seconds(seconds, text):
    assert jobs.format_seconds(seconds) == text
