"""Own data that would train but cannot be analysed is refused when it is loaded, with a message (exit 2
on the command line), never a traceback in a report or a page later."""

from __future__ import annotations

import time

import numpy as np
import pytest

from core.__main__ import main
from core.engine.data import load_dataset
from core.engine.registry import MAX_CLASSES
from core.errors import LogitscopeError


def _npz(tmp_path, labels, name="mine.npz", **extra):
    rng = np.random.default_rng(0)
    labels = np.asarray(labels, dtype=np.int64)
    path = tmp_path / name
    np.savez(path, images=rng.integers(0, 256, (len(labels), 8, 8), dtype=np.uint8), labels=labels, **extra)
    return path


CASES = {
    "one class": (lambda: [0] * 20, "at least 2 classes"),
    "one image": (lambda: [0], "at least 2 classes"),
    "one image of each of two classes": (lambda: [0, 1], "no image is left for the test split"),
    "a huge label": (lambda: [0, 10**12] * 5, f"at most {MAX_CLASSES:,}"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_unusable_own_data_is_a_message_at_load_time(tmp_path, case):
    labels, message = CASES[case]
    path = _npz(tmp_path, labels())
    start = time.perf_counter()
    with pytest.raises(LogitscopeError, match=message):
        load_dataset(f"npz:{path}")
    assert time.perf_counter() - start < 5  # refused before building anything per label


def test_one_class_name_is_refused_too(tmp_path):
    path = _npz(tmp_path, [0] * 10, class_names=np.array(["cat"]))
    with pytest.raises(LogitscopeError, match="at least 2"):
        load_dataset(f"npz:{path}")


def test_a_folder_with_one_class_is_refused(tmp_path):
    from PIL import Image

    (tmp_path / "data" / "cat").mkdir(parents=True)
    for i in range(5):
        Image.fromarray(np.full((8, 8), i * 40, dtype=np.uint8)).save(tmp_path / "data" / "cat" / f"{i}.png")
    with pytest.raises(LogitscopeError, match="at least 2"):
        load_dataset(f"folder:{tmp_path / 'data'}")


@pytest.mark.parametrize("command", ["reproduce", "precompute", "bundle"])
@pytest.mark.parametrize("case", ["one class", "a huge label"])
def test_the_command_line_exits_2_before_any_work(tmp_path, capsys, command, case):
    labels, message = CASES[case]
    path = _npz(tmp_path, labels())
    argv = [command, "--dataset", f"npz:{path}"] + (["--out", str(tmp_path / "b.zip")] if command == "bundle" else [])
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err
    assert f"python -m core {command}" in err  # the subcommand's usage, not the top level's
    assert "Traceback" not in err
