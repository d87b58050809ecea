"""The benchmark harness (not the benchmarks): goals, CI's --check threshold, the table and the JSON.

No timing here: fake cases return fixed results, so these tests cannot be flaky.
"""

from __future__ import annotations

import json

import pytest

from bench import __main__ as bench_main
from bench import cases, common
from bench.cases import Result, judge


@pytest.mark.parametrize("goal, value, ratio, slack, met", [
    ("value <= 60", 59.0, None, 1.0, True),
    ("value <= 60", 61.0, None, 1.0, False),
    ("value <= 60", 119.0, None, 2.0, True),    # within CI's slack
    ("value <= 60", 121.0, None, 2.0, False),   # a real regression
    ("ratio >= 1.3", 5.0, 1.31, 1.0, True),
    ("ratio >= 1.3", 5.0, 1.2, 1.0, False),
    ("ratio >= 1.3", 5.0, 0.66, 2.0, True),
    ("ratio >= 1.3", 5.0, 0.64, 2.0, False),
    ("ratio >= 1.3", 5.0, None, 2.0, False),    # no reference: never met
])
def test_judge(goal, value, ratio, slack, met):
    assert judge(goal, value, ratio, slack) is met


def _fake(value: float):
    def case(quick: bool) -> list[Result]:
        return [Result("fake", value, "s", 10.0, 10.0 / value, "value <= 3", judge("value <= 3", value, None), "a note")]
    return case


def _run(monkeypatch, value: float, *argv: str) -> int:
    monkeypatch.setattr(bench_main, "CASES", {"fake": _fake(value)})
    monkeypatch.setattr(common, "WS", None)
    return bench_main.main(["--quick", *argv])


def test_the_table_and_the_json(monkeypatch, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert _run(monkeypatch, 2.5, "--json", str(out)) == 0
    table = capsys.readouterr().out
    assert "fake" in table and "yes" in table and "- fake: a note" in table
    data = json.loads(out.read_text())
    assert set(data["machine"]) >= {"python", "cpus", "torch", "threads"} and data["quick"] is True
    assert data["results"] == [{"name": "fake", "value": 2.5, "unit": "s", "reference": 10.0, "ratio": 4.0,
                                "goal": "value <= 3", "met": True, "note": "a note"}]


def test_check_fails_only_on_a_regression_beyond_the_slack(monkeypatch, capsys):
    assert _run(monkeypatch, 4.0) == 0                # goal missed, no --check: a report, not a failure
    assert "NO" in capsys.readouterr().out
    assert _run(monkeypatch, 4.0, "--check") == 0     # within 2x of the goal: noise on a shared machine
    assert _run(monkeypatch, 7.0, "--check") == 1     # beyond 2x: CI fails
    assert "REGRESSION: fake" in capsys.readouterr().err


def test_quick_leaves_out_the_full_suite_only_cases_unless_named(monkeypatch, capsys):
    ran = []

    def case(name: str):
        def run(quick: bool) -> list[Result]:
            ran.append(name)
            return [Result(name, 1.0, "s", None, None, "value <= 3", True)]
        return run

    monkeypatch.setattr(bench_main, "CASES", {"fast": case("fast"), "slow": case("slow")})
    monkeypatch.setattr(cases, "FULL_ONLY", frozenset({"slow"}))
    monkeypatch.setattr(common, "WS", None)
    assert bench_main.main(["--quick"]) == 0 and ran == ["fast"]
    assert "skipping slow (full suite only)" in capsys.readouterr().err
    assert bench_main.main([]) == 0 and ran == ["fast", "fast", "slow"]
    assert bench_main.main(["--quick", "--only", "slow"]) == 0 and ran[-1] == "slow"


def test_the_reliable_reproduce_case_is_registered_and_full_suite_only():
    assert {"reproduce_digits_seconds", "train_throughput", "lab_replicates_seconds", "app_findings_seconds"} <= set(
        cases.CASES)
    assert cases.FULL_ONLY <= set(cases.CASES) and "reproduce_digits_seconds" in cases.FULL_ONLY
    assert "precompute_digits_seconds" not in cases.FULL_ONLY  # the quick suite keeps the training + PGD figure
    assert list(cases.CASES).index("precompute_digits_seconds") < list(cases.CASES).index("distill_live_seconds")


def test_the_app_case_reads_the_findings_from_the_pages_text():
    from bench.app_cases import _findings

    head = "What the verdicts mean in the README says more."  # textContent runs blocks together
    clean = head + "1 — holds: PGD-AT minus standard on clean test images.2 — holds: Spearman 0.659."
    assert _findings("Preparing the default digits models") == (False, False)
    assert _findings(clean) == (True, False)
    provisional = clean + "3a — holds under PGD-20, provisionally: ...3b-confidence — holds: ...3b-order — holds: ..."
    assert _findings(provisional) == (True, False)
    reliable = clean + "3a — holds: ...3b-confidence — holds: ...3b-order — not resolved: ..."
    assert _findings(reliable) == (True, True)
    assert _findings("at eps 0.11 — holds") == (False, False)  # a number is not a finding's id
