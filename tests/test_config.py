"""Specs: stable keys (across processes), keys that follow every field, round trips, validation."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from core.config import KEY_LENGTH, AttackSpec, DataSpec, DistillSpec, ModelSpec, TrainSpec, check_eps, stable_key
from core.errors import LogitscopeError

ROOT = Path(__file__).resolve().parent.parent

ATK = AttackSpec(norm="linf", eps=0.2, steps=5, seed=0)
PGD_MODEL = ModelSpec("digits_cnn", "digits", TrainSpec(method="pgd", epochs=3, attack=ATK))
STUDENT = ModelSpec("digits_cnn", "digits", TrainSpec(
    method="distill", epochs=3, distill=DistillSpec(teacher="abc123", manipulation="shuffle_nonmax", fraction=0.5)))
SPECS = [DataSpec(), DataSpec("digits", "train", 100), ATK, AttackSpec(norm="l2", eps=1.5, restarts=2, loss="margin"),
         DistillSpec(teacher="abc123"), TrainSpec(), PGD_MODEL, STUDENT, ModelSpec()]

SUBPROCESS_CODE = """
import json
from core.config import AttackSpec, DataSpec, DistillSpec, ModelSpec, TrainSpec
atk = AttackSpec(norm="linf", eps=0.2, steps=5, seed=0)
specs = [DataSpec(), DataSpec("digits", "train", 100), atk,
         AttackSpec(norm="l2", eps=1.5, restarts=2, loss="margin"), DistillSpec(teacher="abc123"), TrainSpec(),
         ModelSpec("digits_cnn", "digits", TrainSpec(method="pgd", epochs=3, attack=atk)),
         ModelSpec("digits_cnn", "digits", TrainSpec(method="distill", epochs=3, distill=DistillSpec(
             teacher="abc123", manipulation="shuffle_nonmax", fraction=0.5))),
         ModelSpec()]
print(json.dumps([s.key() for s in specs]))
"""


def test_keys_are_short_hex_and_stable_across_processes():
    here = [s.key() for s in SPECS]
    assert all(len(k) == KEY_LENGTH and int(k, 16) >= 0 for k in here)
    # A fresh interpreter with a different hash seed must compute the very same keys.
    out = subprocess.run([sys.executable, "-c", SUBPROCESS_CODE], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == here
    assert len(set(here)) == len(here)  # all different specs, all different keys


def test_stable_key_ignores_dict_order():
    assert stable_key({"a": 1, "b": [1, 2]}) == stable_key({"b": [1, 2], "a": 1})
    assert stable_key({"a": 1}) != stable_key({"a": 2})


@pytest.mark.parametrize("change", [
    lambda m: replace(m, arch="mlp"),
    lambda m: replace(m, dataset="other"),
    lambda m: replace(m, train=replace(m.train, method="trades")),
    lambda m: replace(m, train=replace(m.train, seed=1)),
    lambda m: replace(m, train=replace(m.train, epochs=4)),
    lambda m: replace(m, train=replace(m.train, lr=1e-3)),
    lambda m: replace(m, train=replace(m.train, attack=replace(ATK, eps=0.1))),
    lambda m: replace(m, train=replace(m.train, attack=replace(ATK, steps=7))),
    lambda m: replace(m, train=replace(m.train, attack=replace(ATK, seed=3))),
], ids=["arch", "dataset", "method", "seed", "epochs", "lr", "train-eps", "train-steps", "attack-seed"])
def test_model_key_changes_with_every_field(change):
    assert change(PGD_MODEL).key() != PGD_MODEL.key()


@pytest.mark.parametrize("field,value", [("teacher", "other"), ("manipulation", "flatten_nonmax"),
                                         ("temperature", 2.0), ("hard_weight", 0.5), ("fraction", 1.0)])
def test_student_key_changes_with_distill_fields(field, value):
    d = STUDENT.train.distill
    changed = replace(STUDENT, train=replace(STUDENT.train, distill=replace(d, **{field: value})))
    assert changed.key() != STUDENT.key()


@pytest.mark.parametrize("other", [DataSpec("digits", "train"), DataSpec("digits", "test", 10),
                                   DataSpec("mnist", "test")])
def test_data_key_changes(other):
    assert other.key() != DataSpec("digits", "test").key()


@pytest.mark.parametrize("field,value", [("norm", "l2"), ("eps", 0.1), ("steps", 10), ("step_size", 0.01),
                                         ("restarts", 2), ("loss", "margin"), ("random_start", False), ("seed", 1)])
def test_attack_key_changes_with_every_field(field, value):
    assert replace(ATK, **{field: value}).key() != ATK.key()


def test_attack_at_eps_is_the_spec_with_that_eps():
    assert ATK.at(0.05) == replace(ATK, eps=0.05)
    assert ATK.at(0.05).key() == replace(ATK, eps=0.05).key()
    assert ATK.at(0.05).at(0.2).key() == ATK.key()
    assert ATK.at(0.1).alpha == pytest.approx(2.5 * 0.1 / 5)
    assert replace(ATK, step_size=0.03).at(0.1).alpha == 0.03


def test_equal_specs_have_equal_keys_whatever_the_number_type():
    # AttackSpec(eps=1) == AttackSpec(eps=1.0), so they must share one cache entry.
    assert AttackSpec(norm="l2", eps=1) == AttackSpec(norm="l2", eps=1.0)
    assert AttackSpec(norm="l2", eps=1).key() == AttackSpec(norm="l2", eps=1.0).key()
    assert AttackSpec(eps=0).key() == AttackSpec(eps=0.0).key()
    assert TrainSpec(lr=1).key() == TrainSpec(lr=1.0).key()
    assert DistillSpec(teacher="t", temperature=4).key() == DistillSpec(teacher="t", temperature=4.0).key()


def test_key_includes_the_spec_type():
    # Two spec types with the same field values must not share a key.
    assert AttackSpec().key() != stable_key(AttackSpec().to_dict())


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: type(s).__name__)
def test_from_dict_round_trips(spec):
    d = spec.to_dict()
    back = type(spec).from_dict(d)
    assert back == spec and back.key() == spec.key()
    # ... also through JSON, as the checkpoints and the logits cache store them.
    again = type(spec).from_dict(json.loads(json.dumps(d)))
    assert again == spec and again.key() == spec.key()
    assert isinstance(hash(again), int)  # still a frozen, hashable spec (nested dicts became specs)


def test_from_dict_rebuilds_nested_specs():
    back = ModelSpec.from_dict(json.loads(json.dumps(PGD_MODEL.to_dict())))
    assert isinstance(back.train, TrainSpec) and isinstance(back.train.attack, AttackSpec)
    back = ModelSpec.from_dict(STUDENT.to_dict())
    assert isinstance(back.train.distill, DistillSpec) and back.train.distill.fraction == 0.5


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(LogitscopeError, match="bogus"):
        AttackSpec.from_dict({**ATK.to_dict(), "bogus": 1})


@pytest.mark.parametrize("make", [
    lambda: AttackSpec(eps=-0.1),
    lambda: AttackSpec(norm="l2", eps=-1.0),
    lambda: AttackSpec(norm="linf", eps=1.5),
    lambda: AttackSpec(eps=math.nan),
    lambda: AttackSpec(eps=math.inf),
    lambda: AttackSpec(norm="l2", eps=math.nan),
    lambda: AttackSpec(norm="l2", eps=1000.0),
    lambda: AttackSpec(norm="l1"),
    lambda: AttackSpec(loss="mse"),
    lambda: AttackSpec(steps=-1),
    lambda: AttackSpec(restarts=0),
    lambda: AttackSpec(step_size=0.0),
    lambda: AttackSpec(step_size=math.nan),
    lambda: TrainSpec(method="sgd"),
    lambda: TrainSpec(method="pgd"),  # needs an attack
    lambda: TrainSpec(method="distill"),  # needs a distill spec
    lambda: TrainSpec(epochs=0),
    lambda: TrainSpec(batch_size=0),
    lambda: TrainSpec(lr=0.0),
    lambda: TrainSpec(lr=math.nan),
    lambda: TrainSpec(seed=-1),
    lambda: DistillSpec(teacher=""),
    lambda: DistillSpec(teacher="t", temperature=0.0),
    lambda: DistillSpec(teacher="t", temperature=math.nan),
    lambda: DistillSpec(teacher="t", fraction=1.5),
    lambda: DistillSpec(teacher="t", fraction=-0.1),
    lambda: DistillSpec(teacher="t", fraction=math.nan),
    lambda: DistillSpec(teacher="t", hard_weight=2.0),
    lambda: DataSpec(split="validation"),
    lambda: DataSpec(limit=0),
], ids=["neg-eps", "neg-l2-eps", "linf-eps>1", "nan-eps", "inf-eps", "nan-l2-eps", "huge-l2-eps", "norm", "loss",
        "steps", "restarts", "step-size-0", "step-size-nan", "method", "pgd-no-attack", "distill-no-spec",
        "epochs", "batch", "lr-0", "lr-nan", "seed", "no-teacher", "temperature-0", "temperature-nan",
        "fraction-1.5", "fraction-neg", "fraction-nan", "hard-weight", "split", "limit"])
def test_invalid_values_raise_logitscope_error(make):
    with pytest.raises(LogitscopeError):
        make()


def test_invalid_values_via_from_dict_raise_logitscope_error():
    with pytest.raises(LogitscopeError):
        AttackSpec.from_dict({**ATK.to_dict(), "eps": -1})
    with pytest.raises(LogitscopeError):
        ModelSpec.from_dict({**PGD_MODEL.to_dict(), "train": {**PGD_MODEL.train.to_dict(), "method": "nope"}})


def test_error_messages_say_what_to_do():
    with pytest.raises(LogitscopeError, match=r"\[0, 1\]"):
        check_eps(2.0, "linf")
    with pytest.raises(LogitscopeError, match="linf, l2"):
        check_eps(0.1, "l3")
    with pytest.raises(LogitscopeError, match="standard"):
        TrainSpec(method="bogus")


@pytest.mark.parametrize("eps,norm", [(0.0, "linf"), (1.0, "linf"), (0.3, "linf"), (0.0, "l2"), (5.0, "l2")])
def test_valid_eps_accepted(eps, norm):
    check_eps(eps, norm)
    assert AttackSpec(norm=norm, eps=eps).eps == eps


def test_specs_are_frozen():
    with pytest.raises(Exception):
        ATK.eps = 0.5  # type: ignore[misc]


def test_training_refuses_an_evaluation_only_attack():
    from core.config import AttackSpec, TrainSpec
    from core.errors import LogitscopeError

    with pytest.raises(LogitscopeError, match="evaluation attack"):
        TrainSpec(method="pgd", attack=AttackSpec(eps=0.1, steps=100, method="autoattack-fast"))
