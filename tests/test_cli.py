"""The command line, run as users run it: `python -m core ...` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["standard", "pgd-at", "trades", "student:pgd-at:none", "student:pgd-at:shuffle_nonmax",
         "student:pgd-at:flatten_nonmax", "student:pgd-at:resample_nonmax", "student:pgd-at:global_confidence",
         "student:pgd-at:hard_labels", "student:standard:none"]


def _env(cache: Path) -> dict:
    return {**os.environ, "LOGITSCOPE_CACHE": str(cache), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _run(args: list[str], cache: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=_env(cache), capture_output=True,
                          text=True, timeout=timeout)


def _mtimes(cache: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file() and p.suffix != ".lock"}


@pytest.mark.slow
def test_reproduce_prints_writes_json_and_reuses_the_cache(study_cache, tmp_path):
    before = _mtimes(study_cache)
    assert any(p.suffix == ".pt" for p in before) and any(p.suffix == ".safetensors" for p in before)
    reports = []
    for i in range(2):
        path = tmp_path / f"out{i}" / "report.json"  # the parent folder does not exist yet
        proc = _run(["reproduce", "--dataset", "digits", "--json", str(path)], study_cache)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        for name in NAMES:
            assert name in proc.stdout
        assert "Findings" in proc.stdout and "eps 0.3" in proc.stdout
        assert f"Report written to {path}" in proc.stdout
        reports.append(json.loads(path.read_text()))
    first, second = reports
    assert second["seconds"] < 10
    assert [m["name"] for m in first["models"]] == NAMES
    assert first["dataset"] == "digits" and first["eps"][0] == 0.0
    assert [m["robust_accuracy"] for m in second["models"]] == [m["robust_accuracy"] for m in first["models"]]
    assert _mtimes(study_cache) == before  # nothing retrained, recomputed or rewritten


USAGE_ERRORS = {
    "eps-negative": (["reproduce", "--eps", "-1"], "non-negative"),
    "eps-abc": (["reproduce", "--eps", "abc"], "not a comma-separated list"),
    "eps-linf-2": (["reproduce", "--eps", "2"], "[0, 1]"),
    "dataset": (["reproduce", "--dataset", "nope"], "digits"),
    "seeds-0": (["reproduce", "--seeds", "0"], "at least 1"),
}
SUBPROCESS_CASES = ("eps-negative", "dataset")  # each subprocess pays for importing torch: two are enough


@pytest.fixture(scope="module")
def usage_runs(tmp_path_factory):
    """Some usage errors in real subprocesses, all started at once."""
    cache = tmp_path_factory.mktemp("cli-errors") / "cache"
    procs = {k: subprocess.Popen([sys.executable, "-m", "core", *USAGE_ERRORS[k][0]], cwd=ROOT, env=_env(cache),
                                 text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for k in SUBPROCESS_CASES}
    out = {}
    for k, p in procs.items():
        stdout, stderr = p.communicate(timeout=120)
        out[k] = (p.returncode, stdout, stderr)
    return out, cache


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_usage_errors_exit_2_with_a_message_in_a_subprocess(usage_runs, case):
    runs, cache = usage_runs
    rc, stdout, stderr = runs[case]
    assert rc == 2, (rc, stderr)
    assert "Traceback" not in stderr
    assert USAGE_ERRORS[case][1] in stderr
    assert "usage:" in stderr
    assert stdout == ""
    assert not cache.exists() or not any(cache.rglob("*.pt"))  # nothing was trained


@pytest.mark.parametrize("case", list(USAGE_ERRORS))
def test_usage_errors_exit_2_with_a_message(case, capsys, isolated_cache):
    """In process: any exception other than argparse's SystemExit(2) would fail the test (a traceback)."""
    from core.__main__ import main

    with pytest.raises(SystemExit) as info:
        main(USAGE_ERRORS[case][0])
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert USAGE_ERRORS[case][1] in captured.err and "usage:" in captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert not isolated_cache.exists() or not any(isolated_cache.rglob("*.pt"))


@pytest.mark.parametrize("args,message", [
    (["reproduce", "--eps", "0.1,abc"], "not a comma-separated list"),
    (["reproduce", "--eps", ","], "at least one epsilon"),
    (["reproduce", "--eps", "nan"], "non-negative"),
    (["reproduce", "--eps", "3", "--norm", "l2", "--dataset", "nope"], "nope"),
    (["reproduce", "--eps", "0.1", "--norm", "l1"], "invalid choice"),
    (["reproduce", "--seeds", "two"], "not a whole number"),
    (["reproduce", "--steps", "0"], "at least 1"),
    (["bogus"], "invalid choice"),
    ([], "required"),
], ids=["eps-list-abc", "eps-empty", "eps-nan", "l2-dataset", "norm", "seeds-text", "steps-0", "command",
        "no-command"])
def test_more_usage_errors_in_process(args, message, capsys):
    from core.__main__ import main

    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "usage:" in err


def test_json_path_that_is_a_directory_is_a_usage_error(tmp_path, capsys):
    from core.__main__ import main

    with pytest.raises(SystemExit) as info:
        main(["reproduce", "--json", str(tmp_path)])
    assert info.value.code == 2 and "directory" in capsys.readouterr().err


def test_datasets_lists_digits(tmp_path):
    proc = _run(["datasets"], tmp_path / "cache", timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    digits = [line for line in lines if line.split()[:1] == ["digits"]]
    assert len(digits) == 1 and "1,797" in digits[0]


def test_cache_command_reports_the_folder(isolated_cache, capsys):
    from core.__main__ import main

    (isolated_cache / "logits").mkdir(parents=True)
    (isolated_cache / "logits" / "x.safetensors").write_bytes(b"0" * 2_000_000)
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert str(isolated_cache) in out and "1 files" in out and "2.0 MB" in out
