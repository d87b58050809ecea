"""AutoAttack as the reliable attack: spec keys (old ones unchanged), labels, the survivors-only grid
(perturbations in the ball, never above PGD, monotone, same as attacking every point), the cache of its
entries with their warnings, cancellation, and AutoAttack's output kept off the terminal."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from core.config import AttackSpec, DataSpec, ModelSpec, TrainSpec
from core.engine.analysis import accuracy
from core.engine.attacks import attack_grid
from core.engine.data import load_dataset
from core.engine.logits import entry_path, get_grid
from core.engine.models import build_model
from core.engine.reliable import attacks_for, reliable_grid
from core.errors import Cancelled, LogitscopeError
from core.study.hyper import eval_attack, reliable_attack
from core.study.recipes import default_recipes, load_model

RECORD = json.loads((Path(__file__).parent / "fixtures" / "premove_cache" / "record.json").read_text())
FAST = reliable_attack("digits")
STANDARD = reliable_attack("digits", version="standard")
GRID = (0.0, 0.1, 0.2, 0.3)
N = 64  # test images: enough for accuracies to move by whole images, few enough for seconds per run


# --- specs ------------------------------------------------------------------------------------------

def test_pgd_attack_keys_are_unchanged_and_leave_the_method_out():
    old = AttackSpec.from_dict(RECORD["eval_attack"])  # a dict written before `method` existed
    assert old.method == "pgd" and not old.reliable
    assert old.key() == RECORD["eval_attack_key"] == replace(old, method="pgd").key()
    assert "method" not in old.to_dict() and old.to_dict() == RECORD["eval_attack"]
    # the attacked entry's file name is the key at that eps, as the old code wrote it
    assert RECORD["entries"]["0.1"].endswith(f"-{old.at(0.1).key()}.safetensors")
    # nested in a training spec too: model keys do not move
    model = ModelSpec("digits_cnn", "digits", TrainSpec(method="pgd", attack=AttackSpec(eps=0.2, steps=5)))
    assert "method" not in model.to_dict()["train"]["attack"]
    assert ModelSpec.from_dict(json.loads(json.dumps(model.to_dict()))).key() == model.key()


def test_autoattack_specs_have_their_own_keys_and_entries():
    pgd = eval_attack("digits")
    keys = {s.at(0.1).key() for s in (pgd, FAST, STANDARD)}
    assert len(keys) == 3
    data = DataSpec("digits", "test", 16)
    assert len({entry_path("m", data, s.at(0.1)) for s in (pgd, FAST, STANDARD)}) == 3
    assert entry_path("m", data, FAST.at(0.0)) == entry_path("m", data, pgd.at(0.0))  # clean is shared
    for spec in (FAST, STANDARD):
        d = json.loads(json.dumps(spec.to_dict()))
        assert d["method"] == spec.method and AttackSpec.from_dict(d) == spec and spec.reliable


def test_describe_names_the_attack_in_full():
    assert eval_attack("digits").at(0.1).describe() == "Linf PGD-20 (CE loss, 1 start), eps 0.1"
    assert eval_attack("digits").describe() == "Linf PGD-20 (CE loss, 1 start)"  # the 0 placeholder is left out
    assert FAST.at(0.1).describe() == "Linf AutoAttack (APGD-CE + APGD-T, 100 iterations), eps 0.1"
    assert STANDARD.at(0.1).describe() == "Linf AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square), eps 0.1"
    assert reliable_attack("digits", "l2").at(0.5).describe().startswith("L2 AutoAttack (")
    assert AttackSpec(norm="l2", eps=0.5, restarts=3, loss="margin").describe() == \
        "L2 PGD-20 (margin loss, 3 starts), eps 0.5"


def test_method_is_validated():
    with pytest.raises(LogitscopeError, match="pgd, autoattack-fast, autoattack-standard"):
        AttackSpec(method="apgd")
    with pytest.raises(LogitscopeError, match="100 iterations"):
        AttackSpec(method="autoattack-fast")  # steps=20 would name an attack that does not run
    with pytest.raises(LogitscopeError, match="fast, standard"):
        reliable_attack("digits", version="plus")
    assert FAST.steps == 100 and FAST.eps == 0 and FAST.method == "autoattack-fast"
    assert STANDARD.method == "autoattack-standard"


def test_targeted_attacks_follow_the_number_of_classes():
    assert attacks_for("autoattack-fast", 10) == ("apgd-ce", "apgd-t")
    assert attacks_for("autoattack-standard", 4) == ("apgd-ce", "apgd-t", "fab-t", "square")
    assert attacks_for("autoattack-standard", 3) == ("apgd-ce", "fab-t", "square")  # APGD-T reads 4 logits
    with pytest.raises(LogitscopeError, match="at least 2 outputs"):
        attacks_for("autoattack-fast", 1)


# --- on an untrained model (fast) ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    return ds, ds.x_test[:N], ds.y_test[:N]


@pytest.fixture(scope="module")
def untrained(digits):
    ds = digits[0]
    torch.manual_seed(0)
    return build_model("digits_cnn", ds.shape, ds.num_classes, ds.mean, ds.std).eval()


def test_a_model_with_one_output_is_refused(digits):
    _, x, y = digits
    one = nn.Sequential(nn.Flatten(), nn.Linear(64, 1))
    with pytest.raises(LogitscopeError, match="at least 2 outputs"):
        reliable_grid(one, x, torch.zeros_like(y), FAST, [0.1], 32, "cpu")


def test_cancel_stops_between_batches(digits, untrained):
    _, x, y = digits
    polls = []

    def cancel():
        polls.append(1)
        return len(polls) > 3

    with pytest.raises(Cancelled):
        reliable_grid(untrained, x, y, FAST, GRID, 8, "cpu", cancel=cancel)
    assert len(polls) == 4  # it stopped at the first poll that said so


def test_standard_version_leaves_model_and_global_random_state_untouched(digits, untrained):
    _, x, y = digits
    before = torch.random.get_rng_state()
    grid = reliable_grid(untrained, x[:16], y[:16], STANDARD.at(0.0), [0.0, 0.2], 16, "cpu")
    assert torch.equal(torch.random.get_rng_state(), before)  # pyautoattack seeds the global generator
    assert all(p.requires_grad and p.grad is None for p in untrained.parameters())  # FAB calls backward()
    assert not untrained.training
    assert grid.attacks == ("apgd-ce", "apgd-t", "fab-t", "square")
    assert accuracy(grid[0.2], y[:16]) <= accuracy(grid[0.0], y[:16])


def test_autoattack_warnings_are_returned_and_never_printed(digits, untrained, capsys, caplog):
    """A model that outputs probabilities trips AutoAttack's check; the warning comes back, not on stderr."""
    _, x, y = digits
    probs = nn.Sequential(untrained, nn.Softmax(dim=1)).eval()
    with caplog.at_level(logging.INFO):
        grid = reliable_grid(probs, x[:8], y[:8], FAST, [0.1], 8, "cpu")
    assert any("probability distribution" in w for w in grid.warnings[0.1])
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    ours = [r for r in caplog.records if r.name == "core.engine.reliable" and r.levelno == logging.INFO]
    assert ours and "probability distribution" in ours[0].getMessage()
    assert logging.getLogger("auto-attack").propagate is False  # only through our logger (pytest taps it too)


def test_pgd_entries_are_written_as_before(untrained):
    rec = get_grid(untrained, "untrained", DataSpec("digits", "test", 8), eval_attack("digits"), [0.1])[0.1]
    with safe_open(str(rec.path), "pt") as f:
        meta = f.metadata()
    assert set(meta) == {"format", "model", "data", "attack", "sha256"}  # no AutoAttack fields
    assert rec.warnings == () and json.loads(meta["attack"]) == eval_attack("digits").at(0.1).to_dict()


# --- on the trained PGD-AT model of the default study (slow) -----------------------------------------

@pytest.fixture(scope="module")
def pgd_at(_study_dir, digits):
    """The trained PGD-AT model, and AutoAttack-fast and PGD-20 over GRID on the first N test images."""
    _, x, y = digits
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOGITSCOPE_CACHE", str(_study_dir))
        model = load_model({r.name: r for r in default_recipes("digits")}["pgd-at"])
    aa = reliable_grid(model, x, y, FAST, GRID, 128, "cpu", keep_adv=True)
    pgd = attack_grid(model, x, y, eval_attack("digits"), GRID, batch_size=128)
    return model, aa, pgd


def test_logits_are_the_models_on_examples_inside_the_ball(pgd_at, digits):
    model, aa, _ = pgd_at
    _, x, _ = digits
    for e in GRID:
        adv = aa.adversarial[e]
        assert (adv - x).abs().amax() <= e + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        with torch.no_grad():
            assert torch.allclose(aa[e], model(adv).float(), atol=1e-5), e
        assert aa[e].dtype == torch.float32 and aa[e].shape == (N, 10)
    assert torch.equal(aa.adversarial[0.0], x)


def test_autoattack_is_never_weaker_than_pgd_and_accuracy_never_rises(pgd_at, digits):
    _, aa, pgd = pgd_at
    y = digits[2]
    acc = [accuracy(aa[e], y) for e in GRID]
    assert acc[0] == accuracy(pgd[0.0], y) > 0.9
    assert all(accuracy(aa[e], y) <= accuracy(pgd[e], y) for e in GRID), (acc, [accuracy(pgd[e], y) for e in GRID])
    assert acc == sorted(acc, reverse=True)
    assert acc[-1] < acc[0]  # it does find adversarial examples
    # a point that fell stays fallen with the very logits it fell with
    for a, b in zip(GRID, GRID[1:]):
        fell = aa[a].argmax(1) != y
        assert torch.equal(aa[b][fell], aa[a][fell])


def test_survivors_only_matches_attacking_every_point(pgd_at, digits):
    model, aa, _ = pgd_at
    _, x, y = digits
    every = reliable_grid(model, x, y, FAST, GRID, 128, "cpu", survivors_only=False)
    for e in GRID:
        assert abs(int((aa[e].argmax(1) == y).sum()) - int((every[e].argmax(1) == y).sum())) <= 1, e


def test_entries_are_cached_with_their_warnings_and_continue_from_cached_epsilons(pgd_at, isolated_cache):
    model = pgd_at[0]
    data = DataSpec("digits", "test", 32)
    first = get_grid(model, "pgd-at-model", data, FAST, [0.0, 0.1])
    with safe_open(str(first[0.1].path), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["attacks"]) == ["apgd-ce", "apgd-t"] and json.loads(meta["warnings"]) == []
    assert AttackSpec.from_dict(json.loads(meta["attack"])) == FAST.at(0.1)
    assert first[0.1].path != entry_path("pgd-at-model", data, eval_attack("digits").at(0.1))

    def must_not_compute():
        raise AssertionError("a cached entry was computed again")

    again = get_grid(must_not_compute, "pgd-at-model", data, FAST, [0.0, 0.1])
    for e in (0.0, 0.1):
        assert torch.equal(again[e].logits, first[e].logits) and again[e].warnings == ()
    more = get_grid(model, "pgd-at-model", data, FAST, [0.1, 0.2])  # only 0.2 is computed, from 0.1's survivors
    assert torch.equal(more[0.1].logits, first[0.1].logits)
    fell = first[0.1].logits.argmax(1) != first[0.1].labels
    assert fell.any() and torch.equal(more[0.2].logits[fell], first[0.1].logits[fell])
