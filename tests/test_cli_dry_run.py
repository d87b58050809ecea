"""`python -m core precompute --dry-run`: the plan and its cost printed, bad input a usage error (exit 2)."""

import argparse

import pytest

from core.cli.dry_run import cmd_dry_run


def args(**kw) -> argparse.Namespace:
    base = dict(dataset="cifar10", zoo=["Wong2020Fast", "Standard"], models="none", threat="Linf", eps=None,
                norm="linf", steps=None, evidence=False, gpus=8, executor="ray")
    return argparse.Namespace(**{**base, **kw})


def run(ns: argparse.Namespace, capsys) -> str:
    assert cmd_dry_run(ns, argparse.ArgumentParser(prog="python -m core precompute")) == 0
    return capsys.readouterr().out


def test_prints_models_totals_and_assumptions(capsys, tmp_path):
    out = run(args(), capsys)
    assert "rb:Wong2020Fast" in out and "rb:Standard" in out and "WideResNet-28-10" in out
    assert "1,000 images (the evaluation split): 10 units" in out  # 2 models x 5 epsilons
    assert "10,000 images (the whole test split): 90 units" in out  # x 9 chunks
    assert "wall time on 8 GPUs" in out and "32 GPUs" in out
    assert "checkpoints to download" in out and "Assumptions:" in out and "TFLOP/s" in out
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*"))


def test_evidence_and_eps(capsys):
    out = run(args(evidence=True, eps=[0.01], zoo=["Wong2020Fast"]), capsys)
    assert "1,000 images (the evaluation split): 3 units" in out  # clean, 0.01 and the evidence unit
    assert "AutoAttack" in out


@pytest.mark.parametrize("bad, words", [
    (dict(zoo=["Wong2020Fsat"]), "Wong2020Fast"),        # a typo: close names suggested
    (dict(dataset="digits", zoo=["all"]), "cifar10"),    # no zoo models for this dataset
    (dict(gpus=0), "--gpus"),
])
def test_bad_input_is_a_usage_error(bad, words, capsys):
    with pytest.raises(SystemExit) as exc:
        cmd_dry_run(args(**bad), argparse.ArgumentParser(prog="python -m core precompute"))
    assert exc.value.code == 2
    assert words in capsys.readouterr().err


def test_through_main(capsys):
    from core.cli.parser import build_parser

    try:
        help_text = build_parser()._subparsers._group_actions[0].choices["precompute"].format_help()
    except Exception as exc:  # the flags are wired in another change
        pytest.skip(f"the parser cannot be built yet: {exc}")
    if "--dry-run" not in help_text:
        pytest.skip("--dry-run is not wired into the parser yet")
    from core.__main__ import main

    assert main(["precompute", "--dataset", "cifar10", "--models", "none", "--zoo", "Wong2020Fast", "--dry-run",
                 "--gpus", "4"]) == 0
    assert "wall time on 4 GPUs" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["precompute", "--dataset", "cifar10", "--models", "none", "--zoo", "NoSuchModel", "--dry-run"])
    assert exc.value.code == 2
