"""The command line's zoo and datasets commands, own data and --data-dir in reproduce, and usage errors
(exit status 2, a message, no traceback)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.__main__ import main


def _usage_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    return err


def test_zoo_lists_models_of_a_dataset_and_threat(capsys):
    assert main(["zoo", "--dataset", "cifar10", "--threat", "linf"]) == 0
    out = capsys.readouterr().out
    assert "cifar10   Linf            Ding2020MMA" in out
    assert "Chen2020Adversarial  [ensemble: may return probabilities]" in out
    assert " L2 " not in out and "models. Checkpoints download on first use" in out


@pytest.mark.parametrize("argv, message", [
    (["zoo", "--dataset", "mnist"], "--dataset 'mnist' is not one of cifar10, cifar100, imagenet"),
    (["zoo", "--threat", "l3"], "--threat 'l3' is not one of Linf, L2"),
    (["reproduce", "--dataset", "npz:missing.npz"], "is not an .npz file"),
    (["reproduce", "--dataset", "svhn"], "or give your own data as npz:<path> or folder:<path>"),
    (["reproduce", "--data-dir", "/nonexistent/folder"], "--data-dir /nonexistent/folder is not a folder"),
    (["reproduce", "--arch", "resnet9000"], "unknown architecture 'resnet9000'"),
])
def test_usage_errors_exit_2_with_a_message(capsys, argv, message):
    assert message in _usage_error(capsys, argv)


def test_datasets_lists_real_datasets_and_how_to_use_your_own(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("digits", "mnist", "fashion_mnist", "cifar10", "npz:<path>", "folder:<path>", "--data-dir"):
        assert name in out


def test_reproduce_on_your_own_npz_relative_to_data_dir(tmp_path, capsys, monkeypatch, isolated_cache):
    from dataclasses import replace

    from core.study import hyper as study

    monkeypatch.setattr(study, "OWN_DATA_HYPER", replace(study.OWN_DATA_HYPER, epochs=2))  # a wiring test: be quick
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mine.npz", images=rng.integers(0, 256, (20, 8, 8), dtype=np.uint8), labels=np.arange(20) % 2,
             class_names=np.array(["even", "odd"]))
    report = tmp_path / "report.json"
    code = main(["reproduce", "--dataset", "npz:mine.npz", "--data-dir", str(tmp_path), "--arch", "mlp",
                 "--eps", "0.03", "--steps", "2", "--quiet", "--json", str(report)])
    assert code == 0
    result = json.loads(report.read_text())
    assert result["dataset"].startswith(f"npz:{(tmp_path / 'mine.npz').resolve()}@")
    assert result["eps"] == [0.0, 0.03] and {m["name"] for m in result["models"]} >= {"standard", "pgd-at", "trades"}
    assert "Logitscope reproduction on npz:" in capsys.readouterr().out
    folders = [p.name for p in (isolated_cache / "models").iterdir()]  # one safe folder name, no ':' or '/'
    assert len(folders) == 1 and folders[0].startswith("npz-") and ":" not in folders[0]


@pytest.mark.parametrize("argv, usage", [
    (["zoo", "--dataset", "mnist"], "usage: python -m core zoo"),
    (["precompute", "--models", "nonexistent"], "usage: python -m core precompute"),
    (["bundle", "--models", "standard,nonexistent", "--out", "x.zip"], "usage: python -m core bundle"),
])
def test_a_subcommands_usage_error_prints_its_own_usage(capsys, argv, usage):
    err = _usage_error(capsys, argv)
    assert usage in err and "{reproduce,datasets" not in err


def test_an_unknown_bundle_model_is_a_usage_error(capsys):
    err = _usage_error(capsys, ["bundle", "--models", "standard,nonexistent_model", "--out", "x.zip"])
    assert "unknown model(s) nonexistent_model" in err and "standard" in err


@pytest.mark.parametrize("command", [["cache"], ["reproduce"], ["precompute"], ["bundle", "--out", "x.zip"]])
def test_a_cache_setting_that_names_a_file_is_a_usage_error(capsys, tmp_path, monkeypatch, command):
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("not a folder")
    monkeypatch.setenv("LOGITSCOPE_CACHE", str(not_a_folder))
    err = _usage_error(capsys, command)
    assert "is a file, not a folder" in err and "LOGITSCOPE_CACHE" in err
    assert not_a_folder.read_text() == "not a folder"
