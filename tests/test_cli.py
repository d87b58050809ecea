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
    reproduce_once_with_evidence(study_cache)  # the evidence is cached too: the runs below compute nothing
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
        assert "AutoAttack" in proc.stdout and "PGD-20 (upper bound)" in proc.stdout and "@0.3" in proc.stdout
        assert "Findings at eps 0.1" in proc.stdout
        assert f"Report written to {path}" in proc.stdout
        reports.append(json.loads(path.read_text()))
    first, second = reports
    assert second["seconds"] < 10
    assert [m["name"] for m in first["models"]] == NAMES
    assert first["dataset"] == "digits" and first["eps"][0] == 0.0
    for field in ("robust_accuracy", "robust_accuracy_interval", "pgd_accuracy", "masking"):
        assert [m[field] for m in second["models"]] == [m[field] for m in first["models"]], field
    assert second["findings"] == first["findings"]
    for f in first["findings"]:  # every finding's verdict line, as format_findings writes it
        assert f"{f['id']:<14} {f['verdict']}: {f['quantity']} ({f['attack']}): {f['effect']:+.3f}" in proc.stdout
    assert _mtimes(study_cache) == before  # nothing retrained, recomputed or rewritten


def reproduce_once_with_evidence(cache: Path) -> None:
    """The study's evidence in `cache` (computed once per cache; seconds when it is there)."""
    proc = _run(["reproduce", "--dataset", "digits", "--quiet"], cache, timeout=900)
    assert proc.returncode == 0, proc.stderr


# What pyautoattack says when it talks: its progress lines, its checks' warnings, and our forwarded log records.
AUTOATTACK_CHATTER = ("initial accuracy", "robust accuracy after", "robust accuracy by", "successfully perturbed",
                      "using custom version", "using standard version", "clean accuracy:", "perturbation:",
                      "zero gradient", "AutoAttack: ", "auto-attack")


@pytest.mark.slow
def test_autoattack_runs_silently_behind_the_progress_bar(app_cache):
    """A reproduce that runs AutoAttack (one model's entry missing) prints the report and nothing of pyautoattack's."""
    from core.engine.logits import entry_path
    from core.study.hyper import eval_data, reliable_attack
    from core.study.recipes import default_recipes

    reproduce_once_with_evidence(app_cache)
    standard = default_recipes("digits")[0]
    entry = entry_path(standard.key, eval_data("digits"), reliable_attack("digits").at(0.1))
    assert entry.is_file()
    entry.unlink()
    proc = _run(["reproduce", "--dataset", "digits"], app_cache)  # progress bars on: they go to stderr
    assert proc.returncode == 0, proc.stderr
    assert entry.is_file()  # AutoAttack ran
    for text in AUTOATTACK_CHATTER:
        assert text not in proc.stdout and text not in proc.stderr, text
    assert "Traceback" not in proc.stderr and "holds: " in proc.stdout
    assert "AutoAttack seed 0 standard" in proc.stderr  # its progress went through the CLI's bar


USAGE_ERRORS = {
    "eps-negative": (["reproduce", "--eps", "-1"], "non-negative"),
    "eps-abc": (["reproduce", "--eps", "abc"], "not a comma-separated list"),
    "eps-linf-2": (["reproduce", "--eps", "2"], "[0, 1]"),
    "dataset": (["reproduce", "--dataset", "nope"], "digits"),
    "seeds-0": (["reproduce", "--seeds", "0"], "at least 1"),
    "reliable-nonsense": (["reproduce", "--reliable", "nonsense"], "invalid choice: 'nonsense'"),
    "reliable-eps-negative": (["reproduce", "--reliable-eps", "-0.1"], "--reliable-eps: epsilon must be a non-negative"),
    "reliable-eps-abc": (["reproduce", "--reliable-eps", "0.1,abc"], "not a comma-separated list"),
    "reliable-eps-linf-2": (["reproduce", "--reliable-eps", "2"], "[0, 1]"),
    "reliable-eps-l2-1e6": (["reproduce", "--norm", "l2", "--reliable-eps", "1e6"], "beyond any image"),
    "workers-0": (["reproduce", "--workers", "0"], "at least 1"),
    "precompute-reliable-eps": (["precompute", "--reliable-eps", "0.2"], "needs --evidence"),
}
SUBPROCESS_CASES = ("eps-negative", "dataset", "reliable-nonsense", "reliable-eps-negative")  # each imports torch


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


def test_parallel_progress_keeps_one_bar_whose_text_follows_the_work(capsys):
    from core.cli.args import progress_bar as _progress_bar

    bar = _progress_bar(False)
    for label, fraction in [("reproduce | 0/2 models, train seed 0 standard", 0.1),
                            ("reproduce | 0/2 models, AutoAttack seed 0 pgd-at", 0.4),
                            ("reproduce | 1/2 models, AutoAttack seed 0 pgd-at", 0.9)]:
        bar(label, fraction)
    err = capsys.readouterr().err
    assert "1/2 models, AutoAttack seed 0 pgd-at" in err and "reproduce |" not in err


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
