"""The RobustBench adapter, offline: the import shim, the registry, loading a checkpoint placed where
RobustBench looks for it, broken downloads removed with a clear message, probability outputs marked,
and zoo models in the logits cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_formats import accept_cifar10_files, block_network, write_cifar10
from torch import nn

from core.config import DataSpec
from core.engine import zoo
from core.errors import LogitscopeError

ROOT = Path(__file__).resolve().parent.parent
SMALL = "Ding2020MMA"  # a CIFAR-10 Linf entry with a small architecture (WideResNet-28-4, 5.8M parameters)

SHIM_CODE = """
import sys
assert "robustbench" not in sys.modules and "autoattack" not in sys.modules
from core.engine.zoo import import_robustbench
rb = import_robustbench()
import autoattack, pyautoattack
from autoattack.state import EvaluationState
from pyautoattack.state import EvaluationState as Original
assert autoattack is pyautoattack and EvaluationState is Original
assert callable(rb.utils.load_model) and callable(rb.benchmark)
print("ok")
"""


def test_robustbench_imports_through_the_shim_in_a_fresh_interpreter():
    out = subprocess.run([sys.executable, "-c", SHIM_CODE], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


def test_the_zoo_lists_robustbenchs_registry():
    zoo.import_robustbench()  # robustbench's own modules import only after the shim
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    assert {d.value for d in BenchmarkDataset} == set(zoo.ZOO_DATASETS)
    assert {t.value for t in ThreatModel} == set(zoo.ZOO_THREATS)
    linf = zoo.list_zoo("cifar10", "linf")  # case-insensitive threat
    names = [e.name for e in linf]
    assert {"Standard", "Wong2020Fast", SMALL} <= set(names) and len(names) == len(set(names))
    assert all((e.dataset, e.threat) == ("cifar10", "Linf") for e in linf)
    ensemble = next(e for e in linf if e.name == "Chen2020Adversarial")
    assert ensemble.ensemble and len(ensemble.paths()) == 3
    assert len(zoo.list_zoo()) > len(linf)
    with pytest.raises(LogitscopeError, match="choose one of cifar10, cifar100, imagenet"):
        zoo.list_zoo("mnist")
    with pytest.raises(LogitscopeError, match="Did you mean Ding2020MMA"):
        zoo.find_entry("Ding2020MM")


def test_zoo_model_keys_are_stable_and_distinct():
    key = zoo.zoo_model_key("cifar10", "Linf", SMALL)
    assert key == zoo.find_entry(SMALL).key and len(key) == 12
    assert key != zoo.zoo_model_key("cifar10", "L2", SMALL) != zoo.zoo_model_key("cifar10", "Linf", "Standard")


@pytest.fixture(scope="module")
def checkpoint_bytes() -> bytes:
    """A torch.save'd state dict of random weights of the real zoo architecture (made once per module)."""
    import io

    zoo.import_robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    torch.manual_seed(0)
    net = model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf][SMALL]["model"]()
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    return buf.getvalue()


def test_a_placed_checkpoint_loads_as_a_model_of_logits(checkpoint_bytes, tmp_path, monkeypatch):
    block_network(monkeypatch)
    (path,) = zoo.find_entry(SMALL).paths()
    assert path == zoo.model_dir() / "cifar10" / "Linf" / f"{SMALL}.pt"  # where RobustBench looks for it
    path.parent.mkdir(parents=True)
    path.write_bytes(checkpoint_bytes)
    model = zoo.load_zoo_model(SMALL, dataset="cifar10", threat="Linf")
    assert isinstance(model, zoo.ZooModel) and model.output_kind == "logits" and model.true_logits
    assert not model.training
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (3, 10) and torch.isfinite(out).all()

    # ... and through the logits cache, on CIFAR-10 test images read from torchvision's format
    from core.engine.logits import get_or_compute

    write_cifar10(tmp_path / "data", per_batch=1, n_test=4)
    accept_cifar10_files(monkeypatch, tmp_path / "data")
    key = zoo.zoo_model_key("cifar10", "Linf", SMALL)
    rec = get_or_compute(zoo.zoo_source(SMALL), key, DataSpec(zoo.logitscope_dataset("cifar10"), "test"),
                         data_dir=str(tmp_path / "data"))
    assert rec.logits.shape == (4, 10) and rec.model_key == key and rec.path.is_file()
    from core.engine.data import load_dataset

    x_test, _ = load_dataset("cifar10", str(tmp_path / "data")).split(DataSpec("cifar10", "test"))
    with torch.no_grad():
        assert torch.allclose(rec.logits, model(x_test), atol=1e-4)
    again = get_or_compute(lambda: pytest.fail("a cache hit must not load the model"), key,
                           DataSpec("cifar10", "test"), data_dir=str(tmp_path / "data"))
    assert torch.equal(again.logits, rec.logits)


def test_an_html_page_at_the_checkpoint_path_is_removed_with_a_clear_message(monkeypatch):
    block_network(monkeypatch)
    (path,) = zoo.find_entry(SMALL).paths()
    path.parent.mkdir(parents=True)
    path.write_text("<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head></html>")
    with pytest.raises(LogitscopeError) as err:
        zoo.load_zoo_model(SMALL)
    msg = str(err.value)
    assert "HTML page" in msg and "removed" in msg and "drive.google.com/uc?id=" in msg and str(path) in msg
    assert not path.exists()


@pytest.mark.parametrize("saved", ["html", "truncated"])
def test_a_download_that_saves_a_broken_file_leaves_nothing_behind(checkpoint_bytes, monkeypatch, saved):
    import gdown

    def fake_download(id, output, **kwargs):  # what a refused or interrupted Google Drive download leaves
        data = b"<html><body>Too many users have viewed or downloaded this file</body></html>" if saved == "html" \
            else checkpoint_bytes[: len(checkpoint_bytes) // 2]
        Path(output).write_bytes(data)
        Path(output + "x7f3tmp").write_bytes(data[:10])  # a leftover temporary file of the download
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    with pytest.raises(LogitscopeError, match="removed. Run again to retry the download"):
        zoo.load_zoo_model(SMALL)
    folder = zoo.model_dir() / "cifar10" / "Linf"
    assert [p.name for p in folder.iterdir() if not p.name.startswith(".")] == []


def test_offline_without_a_checkpoint_says_where_to_put_it(monkeypatch):
    block_network(monkeypatch)
    with pytest.raises(LogitscopeError) as err:
        zoo.load_zoo_model(SMALL)
    msg = str(err.value)
    assert msg.startswith(f"Could not download RobustBench model {SMALL}") and "download by hand" in msg
    assert str(zoo.find_entry(SMALL).paths()[0]) in msg


def test_probability_outputs_are_detected_and_marked():
    logits = torch.randn(6, 10) * 3
    assert zoo.output_kind(logits) == "logits"
    assert zoo.output_kind(logits.softmax(1)) == "probabilities"
    assert zoo.output_kind(logits.log_softmax(1)) == "log-probabilities"
    assert zoo.output_kind(torch.full((4, 10), 0.1)) == "probabilities"

    entry = zoo.ZooEntry("cifar10", "Linf", "Fake_Ensemble", 3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10), nn.Softmax(dim=1)).eval()
    kind = zoo.detect_output_kind(net, (3, 32, 32))
    model = zoo.ZooModel(net, entry, kind)
    assert kind == "probabilities" and not model.true_logits and entry.ensemble
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        assert torch.allclose(out.softmax(1), net(x), atol=1e-6)  # log-probabilities: softmax gives them back
        assert (out <= 0).all()
