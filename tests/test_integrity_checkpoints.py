"""A checkpoint must hold the model its path names: a file copied over another model's path passes the
checksum, so it is matched against its key and training spec, and counts as missing (logged once,
trained again) when it does not match."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

from core import storage
from core.config import ModelSpec, TrainSpec
from core.engine import analysis
from core.engine.data import load_dataset
from core.engine.logits import entry_path, get_grid, read
from core.engine.models import build_model, checkpoint_ok, load_checkpoint, read_checkpoint_config, save_checkpoint
from core.errors import LogitscopeError
from core.study.hyper import eval_attack, eval_data
from core.study.recipes import checkpoint_path, default_recipes, is_trained, model_source


@pytest.fixture(autouse=True)
def _fresh_verdicts():
    storage._verdicts.clear()
    storage._reported.clear()


def _save(path, key, spec=None):
    ds = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("mlp", ds.shape, ds.num_classes, ds.mean, ds.std)
    config = {"arch": "mlp", "in_shape": list(ds.shape), "num_classes": 10, "mean": list(ds.mean),
              "std": list(ds.std)}
    if key is not None:
        config["key"] = key
    if spec is not None:
        config["spec"] = spec.to_dict()
    return save_checkpoint(path, model, config)


def test_a_checkpoint_is_loaded_only_as_the_model_it_holds(tmp_path):
    spec = ModelSpec("mlp", "digits", TrainSpec(epochs=1))
    path = _save(tmp_path / "m.pt", spec.key(), spec)
    assert load_checkpoint(path, key=spec.key()) is not None
    with pytest.raises(LogitscopeError, match="copied or moved"):
        load_checkpoint(path, key="0123456789ab")
    assert checkpoint_ok(path, spec.key()) and not checkpoint_ok(path, "0123456789ab")
    assert checkpoint_ok(path, spec.key())  # the verdicts for two expectations are kept apart
    assert load_checkpoint(path) is not None  # without a key: any intact checkpoint (a user's own file)


def test_a_stored_key_that_disagrees_with_the_stored_spec_is_refused(tmp_path):
    spec = ModelSpec("mlp", "digits", TrainSpec(epochs=1))
    other = ModelSpec("mlp", "digits", TrainSpec(epochs=2))
    path = _save(tmp_path / "m.pt", other.key(), spec)  # key says one model, the spec it was trained from another
    with pytest.raises(LogitscopeError, match="copied or moved"):
        load_checkpoint(path, key=other.key())


def test_a_checkpoint_without_a_stored_key_cannot_stand_in_for_a_model(tmp_path):
    path = _save(tmp_path / "m.pt", None)
    with pytest.raises(LogitscopeError, match="no model key"):
        load_checkpoint(path, key="0123456789ab")


def test_a_student_copied_over_trades_is_retrained_and_its_logits_are_trades_again(app_cache, caplog):
    recipes = {r.name: r for r in default_recipes("digits")}
    trades, student = recipes["trades"], recipes["student:pgd-at:none"]
    data, attack = eval_data("digits"), eval_attack("digits").at(0.1)
    before = read(trades.key, data, attack)
    student_acc = analysis.accuracy(*_logits(read(student.key, data, attack)))
    assert before is not None
    shutil.copyfile(checkpoint_path(student), checkpoint_path(trades))
    for e in (0.0, 0.1):  # make TRADES' logits recompute, as after a change of the attack
        entry_path(trades.key, data, None if e == 0 else attack).unlink()

    with caplog.at_level(logging.WARNING):
        assert not is_trained(trades)
        assert not is_trained(trades)
    assert sum("copied or moved" in r.getMessage() for r in caplog.records) == 1  # logged once

    source = model_source(trades)  # trains TRADES again, over the foreign file
    assert read_checkpoint_config(checkpoint_path(trades))["key"] == trades.key and is_trained(trades)
    after = get_grid(source, trades.key, data, eval_attack("digits"), [0.0, 0.1])[0.1]
    acc_before, acc_after = analysis.accuracy(*_logits(before)), analysis.accuracy(*_logits(after))
    assert abs(acc_after - acc_before) <= 0.02, (acc_before, acc_after)
    assert abs(acc_before - student_acc) > 0.05  # the two models are told apart by this number


def _logits(record):
    return record.logits, record.labels
