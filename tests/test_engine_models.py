"""Models: normalisation inside, checkpoints that round-trip, and safe (weights-only) loading."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from torch import nn

from core.engine.data import load_dataset
from core.engine.models import (
    CHECKPOINT_FORMAT,
    Normalize,
    build_model,
    load_checkpoint,
    read_checkpoint_config,
    resolve_device,
    save_checkpoint,
)
from core.errors import LogitscopeError


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _config(ds, **extra):
    return {"arch": "digits_cnn", "in_shape": list(ds.shape), "num_classes": ds.num_classes,
            "mean": list(ds.mean), "std": list(ds.std), **extra}


@pytest.fixture
def model(digits):
    torch.manual_seed(0)
    m = build_model("digits_cnn", digits.shape, digits.num_classes, digits.mean, digits.std)
    with torch.no_grad():  # move away from the initialisation, so a rebuilt model could not match by chance
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


@pytest.fixture
def ckpt(tmp_path, model, digits):
    return save_checkpoint(tmp_path / "sub" / "model.pt", model, _config(digits, name="m", spec={"x": 1}))


def test_round_trip_gives_identical_logits(model, ckpt, digits):
    loaded = load_checkpoint(ckpt)
    x = digits.x_test[:64]
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded(x).shape == (64, 10)
    # a freshly initialised model of the same architecture computes something else
    torch.manual_seed(1)
    other = build_model("digits_cnn", digits.shape, 10, digits.mean, digits.std)
    with torch.no_grad():
        assert not torch.allclose(other(x), model(x))


def test_convolutions_run_channels_last_and_checkpoints_stay_plain(model, ckpt, digits):
    """The CPU speed-up (NHWC convolutions and pooling) changes the layout only, never the function or the file."""
    loaded = load_checkpoint(ckpt)
    for m in (model, loaded):
        convs = [p for n, p in m.named_parameters() if p.ndim == 4]
        assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    saved = torch.load(ckpt, weights_only=True)["state_dict"]
    assert all(t.is_contiguous() for t in saved.values())
    plain = build_model("digits_cnn", digits.shape, 10, digits.mean, digits.std)
    plain.load_state_dict(saved)
    plain = plain.to(memory_format=torch.contiguous_format).eval()  # the same weights in NCHW
    x = digits.x_test[:64]
    with torch.no_grad():
        assert torch.allclose(plain(x), loaded(x), atol=1e-5)


def test_loaded_model_is_in_eval_mode(model, ckpt):
    model.train()
    loaded = load_checkpoint(ckpt)
    assert not loaded.training
    assert not any(m.training for m in loaded.modules())


def test_checkpoint_config_round_trips(ckpt, digits):
    cfg = read_checkpoint_config(ckpt)
    assert cfg == _config(digits, name="m", spec={"x": 1})


def test_save_is_atomic_and_leaves_no_temporary_files(ckpt):
    assert sorted(os.listdir(ckpt.parent)) == ["model.pt"]


def test_save_requires_the_rebuild_fields(tmp_path, model, digits):
    cfg = _config(digits)
    del cfg["mean"]
    with pytest.raises(ValueError, match="mean"):
        save_checkpoint(tmp_path / "m.pt", model, cfg)
    assert not (tmp_path / "m.pt").exists()


def test_normalisation_is_the_first_layer(model, digits):
    norm = model[0]
    assert isinstance(norm, Normalize)
    assert norm.mean.flatten().tolist() == pytest.approx(list(digits.mean))
    assert norm.std.flatten().tolist() == pytest.approx(list(digits.std))
    # mean and std are buffers: saved with the weights, not trained
    assert {"0.mean", "0.std"} <= set(model.state_dict())
    assert all(not n.startswith("0.") for n, _ in model.named_parameters())
    x = digits.x_test[:16]
    with torch.no_grad():
        expected = model[1]((x - digits.mean[0]) / digits.std[0])
        assert torch.allclose(model(x), expected, atol=1e-6)


def test_normalisation_statistics_come_back_from_the_checkpoint(tmp_path, digits):
    torch.manual_seed(0)
    m = build_model("digits_cnn", digits.shape, 10, (0.25,), (0.5,))
    path = save_checkpoint(tmp_path / "m.pt", m, {**_config(digits), "mean": [0.25], "std": [0.5]})
    loaded = load_checkpoint(path)
    assert loaded[0].mean.item() == 0.25 and loaded[0].std.item() == 0.5
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), m.eval()(x))


def test_mlp_architecture_and_unknown_architecture(digits):
    m = build_model("mlp", digits.shape, 10, digits.mean, digits.std)
    assert m(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    with pytest.raises(LogitscopeError, match="digits_cnn"):
        build_model("resnet9000", digits.shape, 10, digits.mean, digits.std)


def test_missing_file(tmp_path):
    with pytest.raises(LogitscopeError, match="No checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")
    with pytest.raises(LogitscopeError):
        load_checkpoint(tmp_path)  # a directory is not a checkpoint either


def test_truncated_checkpoint(ckpt):
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(LogitscopeError, match="Cannot read checkpoint"):
        load_checkpoint(ckpt)


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, os.urandom(4096)], ids=["empty", "text", "random"])
def test_garbage_checkpoint(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(LogitscopeError):
        load_checkpoint(path)


class _Evil:
    """Unpickling this object runs code: weights-only loading must refuse it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_plain_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": CHECKPOINT_FORMAT, "config": "{}", "state_dict": _Evil(str(marker))}, f)
    with pytest.raises(LogitscopeError, match="Cannot read checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_torch_save_with_arbitrary_objects_is_refused(tmp_path, model, digits):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    state = {k: v for k, v in model.state_dict().items()}
    torch.save({"format": CHECKPOINT_FORMAT, "config": '{"arch": "digits_cnn"}', "state_dict": state,
                "extra": _Evil(str(marker))}, path)
    with pytest.raises(LogitscopeError, match="Cannot read checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()
    # a whole pickled module (the usual `torch.save(model)`) is refused as well
    torch.save(model, tmp_path / "module.pt")
    with pytest.raises(LogitscopeError):
        load_checkpoint(tmp_path / "module.pt")


def test_torch_file_that_is_not_a_logitscope_checkpoint(tmp_path, model):
    path = tmp_path / "plain.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(LogitscopeError, match="not a Logitscope checkpoint"):
        load_checkpoint(path)


def test_checkpoint_of_another_architecture(tmp_path, digits):
    m = build_model("mlp", digits.shape, 10, digits.mean, digits.std)
    path = save_checkpoint(tmp_path / "m.pt", m, _config(digits))  # claims digits_cnn, holds an MLP
    with pytest.raises(LogitscopeError, match="does not match"):
        load_checkpoint(path)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert isinstance(resolve_device("auto"), torch.device)
    with pytest.raises(LogitscopeError):
        resolve_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(LogitscopeError, match="CUDA"):
            resolve_device("cuda")


def test_model_on_inputs_in_unit_range(model, digits):
    # the model takes pixel-unit inputs as they come from the data: no external normalisation
    x = digits.x_test[:8]
    assert 0 <= x.min() and x.max() <= 1
    with torch.no_grad():
        out = model(x)
    assert out.shape == (8, 10) and torch.isfinite(out).all()
    assert isinstance(model, nn.Sequential)
