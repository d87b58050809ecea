"""Units in worker processes (`core.study.parallel`): results in order, progress forwarded, failures raised here."""

from __future__ import annotations

import os

import pytest

from core.errors import LogitscopeError
from core.study import parallel


def square(x: int, report) -> tuple[int, int]:
    """A unit: reports its progress, returns its result and the process that computed it."""
    report("half", 0.5)
    if x < 0:
        raise LogitscopeError(f"negative: {x}")
    report("done", 1.0)
    return x * x, os.getpid()


def test_units_run_in_worker_processes_and_come_back_in_order():
    seen = []
    out = parallel.run_units(square, [(i,) for i in range(5)], workers=2,
                             progress=lambda i, what, f: seen.append((i, what, f)))
    assert [r for r, _ in out] == [0, 1, 4, 9, 16]
    pids = {pid for _, pid in out}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert {(i, "done", 1.0) for i in range(5)} <= set(seen)


def test_one_worker_runs_in_this_process_and_a_failure_is_raised_here():
    out = parallel.run_units(square, [(2,), (3,)], workers=1)
    assert out == [(4, os.getpid()), (9, os.getpid())]
    with pytest.raises(LogitscopeError, match="negative: -1"):
        parallel.run_units(square, [(1,), (-1,), (2,)], workers=2)


def test_workers_follow_the_device_and_the_cores():
    assert parallel.default_workers("cpu", 10) == min(parallel.cores(), parallel.MAX_WORKERS, 10)
    assert parallel.default_workers("cpu", 1) == 1
    assert parallel.default_workers("cuda", 10) == 1  # an accelerator is shared by one process


def sleepy(x: int, report) -> int:
    """A unit that takes a while: long enough for a cancel to arrive while it runs."""
    import time

    for i in range(50):
        report("sleeping", i / 50)
        time.sleep(0.1)
    return x


def test_cancel_stops_the_workers_and_raises_cancelled():
    import time

    from core.errors import Cancelled

    start = time.time()
    with pytest.raises(Cancelled):
        parallel.run_units(sleepy, [(i,) for i in range(4)], workers=2,
                           cancel=lambda: time.time() - start > 3.0)
    assert time.time() - start < 20  # the units would take 10 s each: they were stopped, not waited for
    with pytest.raises(Cancelled):  # in this process too, between units
        parallel.run_units(square, [(1,), (2,)], workers=1, cancel=lambda: True)


def main_name(report) -> str | None:
    """A unit: the name under which the worker imported its parent's main module (None: it did not)."""
    import sys

    main = sys.modules.get("__mp_main__")
    return getattr(main, "__file__", None)


def test_workers_do_not_run_a_main_script_that_has_no_module_name(tmp_path, monkeypatch):
    import sys
    import types

    script = tmp_path / "page.py"
    script.write_text("raise SystemExit('the page script ran in a worker')\n")
    fake = types.ModuleType("__main__")
    fake.__file__ = str(script)  # like Streamlit's page script: a file, no module name
    monkeypatch.setitem(sys.modules, "__main__", fake)
    out = parallel.run_units(main_name, [(), ()], workers=2)
    assert str(script) not in out
    assert sys.modules["__main__"] is fake  # put back


def test_a_worker_whose_driver_is_gone_stops(tmp_path):
    """Kill the driver mid-unit: its worker stops at its next progress report instead of computing on."""
    import signal
    import subprocess
    import sys
    import time

    marker = tmp_path / "worker.pid"
    driver = subprocess.Popen([sys.executable, "-c", f"""
import os, sys, time
sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
from core.study import parallel
from test_study_parallel import reporting_forever
parallel.run_units(reporting_forever, [({str(marker)!r},), ({str(marker)!r},)], workers=2)
"""], cwd=str(__import__('pathlib').Path(__file__).parent.parent))
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "the worker never started"
    time.sleep(0.3)
    pid = int(marker.read_text().split()[0])
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        if not _running(pid):
            break
        time.sleep(0.2)
    else:
        os.kill(pid, signal.SIGKILL)
        raise AssertionError("the orphaned worker kept running")


def reporting_forever(marker: str, report) -> None:
    """A unit that never ends on its own, reporting progress often."""
    import time

    with open(marker, "w") as f:
        f.write(f"{os.getpid()} ")
    while True:
        report("working", 0.5)
        time.sleep(0.1)


def _running(pid: int) -> bool:
    """The process exists and has not exited (an exited one may linger as a zombie until it is reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except OSError:
        return False


def timed(name: str, seconds: float, report) -> tuple[str, float, float]:
    """A unit that takes `seconds` and says when it ran."""
    import time

    start = time.time()
    time.sleep(seconds)
    return name, start, time.time()


def test_a_unit_waits_for_the_units_it_comes_after_and_a_free_worker_takes_the_next_ready_one():
    # 1 comes after 0 (a student after its teacher); 2 is independent, so a worker runs it while 0 runs
    units = [("teacher", 1.5), ("student", 0.1), ("other", 0.1)]
    out = parallel.run_units(timed, units, workers=2, after=[[], [0], []])
    (_, t0, e0), (_, s1, _), (_, s2, _) = out
    assert s1 >= e0  # the student started once its teacher was done
    assert s2 < e0  # the independent unit did not wait behind the student
    seen = []
    in_process = parallel.run_units(lambda name, seconds, report: seen.append(name) or name, units, workers=1,
                                    after=[[1], [], []])
    assert seen == ["student", "teacher", "other"] and in_process == ["teacher", "student", "other"]


def test_units_that_wait_on_each_other_are_refused():
    with pytest.raises(ValueError, match="cycle"):
        parallel.run_units(square, [(1,), (2,)], workers=1, after=[[1], [0]])
    with pytest.raises(ValueError, match="one list"):
        parallel.run_units(square, [(1,), (2,)], workers=2, after=[[5], []])
