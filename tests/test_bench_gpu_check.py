"""bench/gpu_check.py without a GPU: it refuses clearly, and its comparison helpers judge correctly."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.gpu_check import accuracy, agrees, verdict

ROOT = Path(__file__).resolve().parent.parent


def test_exits_2_with_a_message_when_cuda_is_unavailable():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no CUDA even on a machine with a GPU
    done = subprocess.run([sys.executable, "-m", "bench.gpu_check"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "CUDA is not available" in done.stderr and "Nothing was checked" in done.stderr
    assert "PASS" not in done.stdout and "FAIL" not in done.stdout


@pytest.mark.parametrize("a, b, tol, ok", [
    (0.9, 0.9, 0.0, True),
    (0.9, 0.87, 0.05, True),
    (0.87, 0.9, 0.05, True),   # symmetric
    (0.9, 0.85, 0.05, True),   # exactly the tolerance, though 0.9 - 0.85 rounds to 0.05000000000000004
    (0.9, 0.84, 0.05, False),
    (0.5, 0.53, 0.03, True),
    (0.5, 0.54, 0.03, False),
    (0.1, 0.95, 0.05, False),  # a broken device path: chance against a trained model
    (math.nan, 0.9, 0.05, False),
])
def test_agrees_judges_the_difference(a, b, tol, ok):
    got, text = agrees(a, b, tol)
    assert got is ok
    assert f"{a:.4f} vs {b:.4f}" in text and f"{tol:g}" in text
    assert ("<=" in text) is ok


def test_verdict_and_accuracy():
    assert verdict("pgd", True, "x") == "PASS pgd: x"
    assert verdict("pgd", False, "x") == "FAIL pgd: x"
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0], [1.0, 4.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1, 0])) == 0.5
