"""What every benchmark case shares: the workspace cache, a result row, goals, and timing."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent


class Workspace:
    """One temporary cache for the whole run: reproduce fills it, later cases read it warm."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="logitscope-bench-")
        self.cache = Path(self._tmp.name)
        self.filled = False

    def env(self) -> dict:
        return {**os.environ, "LOGITSCOPE_CACHE": str(self.cache), "PYTHONPATH": str(ROOT)}

    def activate(self) -> None:
        os.environ["LOGITSCOPE_CACHE"] = str(self.cache)

    def fill(self) -> None:
        """Make sure the default digits study is trained and attacked over the PGD grid in this cache."""
        if not self.filled:
            subprocess.run([sys.executable, "-m", "core", "precompute", "--dataset", "digits", "--quiet"],
                           cwd=ROOT, env=self.env(), check=True, capture_output=True)
            self.filled = True

    def close(self) -> None:
        self._tmp.cleanup()


WS: Workspace | None = None


def workspace() -> Workspace:
    global WS
    if WS is None:
        WS = Workspace()
        WS.activate()
    return WS


@dataclass
class Result:
    name: str
    value: float
    unit: str
    reference: float | None  # the reference's figure in the same unit, measured in this run
    ratio: float | None      # how many times better than the reference (>1 is better)
    goal: str                # e.g. "ratio >= 1.3" or "value <= 60"
    met: bool
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def judge(goal: str, value: float, ratio: float | None, slack: float = 1.0) -> bool:
    """Whether a result meets its goal ("value <= 60", "ratio >= 1.3"); slack > 1 loosens the goal by
    that factor (CI's `--check`: only a regression far beyond the noise of a shared machine fails)."""
    what, op, target = goal.split()
    x = ratio if what == "ratio" else value
    if x is None:
        return False
    return x >= float(target) / slack if op == ">=" else x <= float(target) * slack


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def ratio_row(name: str, ours: float, ref: float, unit: str, note: str, goal: str = "ratio >= 1.3") -> Result:
    ratio = ours / ref
    return Result(name, ours, unit, ref, ratio, goal, judge(goal, ours, ratio), note)


