"""`python -m core precompute`: units land in the cache one by one, and an interrupted run resumes.

The models come trained from the study cache (only their checkpoints are copied), so every test
computes logits only: a few PGD-20 passes over the 360 digits test images.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from core.__main__ import main
from core.config import DataSpec
from core.engine import attacks, logits
from core.errors import Cancelled, LogitscopeError
from core.study import precompute as pc
from core.study import units
from core.study.hyper import eval_attack
from core.study.recipes import evaluated_zoo, load_model


@pytest.fixture
def trained(_study_dir, isolated_cache):
    """An empty logits cache beside the study's trained checkpoints."""
    shutil.copytree(_study_dir / "models", isolated_cache / "models", ignore=shutil.ignore_patterns("*.lock"))
    return isolated_cache


@pytest.fixture
def attack_calls(monkeypatch):
    """Count the attack passes (one per computed unit), wherever they are started from."""
    calls = []
    real = attacks.attack_grid

    def counting(*args, **kwargs):
        calls.append(kwargs.get("first_index", 0))
        return real(*args, **kwargs)

    monkeypatch.setattr(logits, "attack_grid", counting)
    monkeypatch.setattr(units, "attack_grid", counting)  # the chunks'
    return calls


def test_precompute_fills_the_cache_with_what_the_app_reads(trained, attack_calls, _study_dir):
    recipes = pc.select_models("digits", "standard")
    out = pc.precompute("digits", recipes, eps=[0.1])
    assert out.grid == (0.0, 0.1) and out.data == DataSpec("digits", "test") and not out.trained
    assert len(out.computed) == 2 and not out.skipped and len(attack_calls) == 2
    attack = eval_attack("digits")
    for r in recipes:  # the same numbers as the study's own logits, computed in one pass over the whole grid
        for eps in (0.0, 0.1):
            entry = logits.entry_path(r.key, out.data, None if eps == 0 else attack.at(eps))
            study = _study_dir / entry.relative_to(trained)
            mine, theirs = load_file(entry)["logits"], load_file(study)["logits"]
            assert torch.allclose(mine, theirs, atol=1e-5), (r.name, eps)
    again = pc.precompute("digits", recipes, eps=[0.1])
    assert not again.computed and len(again.skipped) == 2 and len(attack_calls) == 2  # nothing recomputed


def test_an_interrupted_precompute_resumes_with_what_is_left(trained, attack_calls):
    recipes = pc.select_models("digits", "standard,pgd-at")

    def cancel() -> bool:  # an interruption right after the first unit
        if attack_calls:
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        pc.precompute("digits", recipes, eps=[0.05, 0.1], steps=5, cancel=cancel)
    assert len(attack_calls) == 1
    out = pc.precompute("digits", recipes, eps=[0.05, 0.1], steps=5, cancel=lambda: False)
    assert len(out.skipped) == 1 and len(out.computed) == 5  # 2 models x 3 epsilons, one done before
    assert len(attack_calls) == 6
    # a cancel callback that returns True stops with Cancelled before any further unit
    with pytest.raises(Cancelled):
        pc.precompute("digits", recipes, eps=[0.15], steps=5, cancel=lambda: True)
    assert len(attack_calls) == 6


def test_big_test_sets_go_in_chunks_that_join_into_the_same_entry(trained, attack_calls, monkeypatch):
    monkeypatch.setattr(logits, "eval_batch_size", lambda shape, device="cpu": 64)
    recipe = pc.select_models("digits", "standard")
    plan = pc.plan(recipe, [0.0, 0.1], 360, 64, chunk_images=100)  # 100 rounds up to 2 batches: 128 images
    assert [(u.start, u.stop) for u in plan if u.eps == 0.1] == [(0, 128), (128, 256), (256, 360)]

    with pytest.raises(Cancelled):  # stopped after two units
        pc.precompute("digits", recipe, eps=[0.1], steps=5, cancel=lambda: len(attack_calls) >= 2, chunk_images=100)
    assert attack_calls == [0, 128]  # two chunks of eps 0 done and kept as parts
    out = pc.precompute("digits", recipe, eps=[0.1], steps=5, chunk_images=100)
    assert len(out.skipped) == 2 and len(out.computed) == 4 and attack_calls[2:] == [256, 0, 128, 256]
    assert not (trained / "precompute").exists()  # the parts were joined and removed

    attack = eval_attack("digits", steps=5)
    data = DataSpec("digits", "test")
    x, y = pc.load_dataset("digits").split(data)
    whole = attacks.attack_grid(load_model(recipe[0]), x, y, attack, [0.0, 0.1], batch_size=64)
    for eps in (0.0, 0.1):
        entry = logits.read(recipe[0].key, data, None if eps == 0 else attack.at(eps))
        assert torch.equal(entry.logits, whole[eps]) and torch.equal(entry.labels, y)


def _damage(path, how: str) -> None:
    blob = bytearray(path.read_bytes())
    if how == "truncated":
        del blob[-100:]
    else:  # one bit of the tensors' data flipped: the file still parses, its checksum no longer matches
        blob[-5] ^= 0x01
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("how", ["truncated", "bit-flipped"])
def test_a_corrupt_entry_is_computed_again_not_skipped(trained, attack_calls, how):
    """README, "Checked reads": a corrupt entry counts as missing. `is_done` used to test only that the file
    existed, so a re-run skipped the broken entry and reported it as cached."""
    recipes = pc.select_models("digits", "standard")
    first = pc.precompute("digits", recipes, eps=[0.1], steps=5)
    assert len(first.computed) == 2 and len(attack_calls) == 2
    attack = eval_attack("digits", steps=5)
    good = logits.read(recipes[0].key, first.data, attack.at(0.1))
    path, good = good.path, (good.logits.clone(), good.labels.clone())  # copies: the record may map the file
    _damage(path, how)
    assert not logits.entry_ok(recipes[0].key, first.data, attack.at(0.1))

    again = pc.precompute("digits", recipes, eps=[0.1], steps=5)
    assert [u.eps for u in again.computed] == [0.1] and [u.eps for u in again.skipped] == [0.0]
    assert len(attack_calls) == 3  # the broken entry only
    mended = logits.read(recipes[0].key, first.data, attack.at(0.1))
    assert mended is not None and torch.equal(mended.logits, good[0]) and torch.equal(mended.labels, good[1])
    assert not pc.precompute("digits", recipes, eps=[0.1], steps=5).computed  # and now it is cached


def test_a_corrupt_chunk_is_computed_again_before_the_join(trained, attack_calls, monkeypatch):
    """A part left by an interrupted run that is truncated counts as missing: it is computed again and the
    joined entry is what one pass over the whole split gives."""
    monkeypatch.setattr(logits, "eval_batch_size", lambda shape, device="cpu": 64)
    recipe = pc.select_models("digits", "standard")
    with pytest.raises(Cancelled):  # stopped after two chunks of eps 0, kept as parts
        pc.precompute("digits", recipe, eps=[0.1], steps=5, cancel=lambda: len(attack_calls) >= 2, chunk_images=100)
    attack, data = eval_attack("digits", steps=5), DataSpec("digits", "test")
    chunks = pc.plan(recipe, [0.0], 360, 64, chunk_images=100)
    assert pc.part_ok(chunks[0], data, attack) and pc.part_ok(chunks[1], data, attack)
    _damage(pc.part_path(chunks[1], data, attack), "truncated")
    assert not pc.part_ok(chunks[1], data, attack) and not pc.is_done(chunks[1], data, attack)

    out = pc.precompute("digits", recipe, eps=[0.1], steps=5, chunk_images=100)
    assert [(u.eps, u.start) for u in out.skipped] == [(0.0, 0)]
    assert [(u.eps, u.start) for u in out.computed] == [(0.0, 128), (0.0, 256), (0.1, 0), (0.1, 128), (0.1, 256)]
    assert attack_calls[2:] == [128, 256, 0, 128, 256] and not (trained / "precompute").exists()
    x, y = pc.load_dataset("digits").split(data)
    whole = attacks.attack_grid(load_model(recipe[0]), x, y, attack, [0.0], batch_size=64)
    assert torch.equal(logits.read(recipe[0].key, data, None).logits, whole[0.0])


def test_unknown_models_and_zoo_names_are_user_errors():
    with pytest.raises(LogitscopeError, match="Unknown model"):
        pc.select_models("digits", "standard,nobody")
    with pytest.raises(LogitscopeError, match="RobustBench has no models for digits"):
        pc.select_models("digits", "none", zoo=["Wong2020Fast"])
    with pytest.raises(LogitscopeError, match="No models chosen"):
        pc.select_models("digits", "none")


def test_zoo_models_are_precomputed_and_offered_by_the_app(tmp_path, monkeypatch, attack_calls):
    from tiny_formats import accept_cifar10_files, write_cifar10

    from core.app.views import catalog
    from core.engine import zoo

    write_cifar10(tmp_path / "data", per_batch=2, n_test=5)
    accept_cifar10_files(monkeypatch, tmp_path / "data")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))

    def fake_load(name, dataset="cifar10", threat="Linf", device="cpu", root=None):
        return zoo.ZooModel(net, zoo.find_entry(name, dataset, threat), "logits").eval()

    monkeypatch.setattr(zoo, "load_zoo_model", fake_load)
    recipes = pc.select_models("cifar10", "none", zoo=["Wong2020Fast"])
    assert [r.name for r in recipes] == ["rb:Wong2020Fast"] and recipes[0].key == zoo.zoo_model_key(
        "cifar10", "Linf", "Wong2020Fast")
    out = pc.precompute("cifar10", recipes, eps=[8 / 255], data_dir=str(tmp_path / "data"))
    assert len(out.computed) == 2 and len(attack_calls) == 2
    assert evaluated_zoo("cifar10") == [{"dataset": "cifar10", "threat": "Linf", "name": "Wong2020Fast",
                                         "key": recipes[0].key, "output_kind": "logits"}]
    listed = catalog("cifar10")
    assert "rb:Wong2020Fast" in listed and listed["rb:Wong2020Fast"].key == recipes[0].key
    rec = logits.read(recipes[0].key, out.data, None)
    assert rec.logits.shape == (5, 10)


def test_the_command_line_runs_and_an_interruption_exits_130(trained, capsys, monkeypatch):
    assert main(["precompute", "--dataset", "digits", "--models", "standard", "--eps", "0.1", "--steps", "3",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "computed 2 units, 0 already cached" in printed

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pc, "precompute", interrupted)
    assert main(["precompute", "--models", "standard", "--quiet"]) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["precompute", "--models", "nobody"])
    assert exc.value.code == 2


def test_units_another_process_computed_while_this_one_waited_count_as_cached(trained, monkeypatch, _study_dir):
    """The lock waiter finds the entry written when it gets the lock: it computed nothing and says so."""
    recipes = pc.select_models("digits", "standard")
    real = logits.get_grid

    def other_process_was_first(model, key, data, attack, grid, *args, **kwargs):
        for e in grid:  # the other process's entry lands while this one waits for the lock
            entry = logits.entry_path(key, data, None if e == 0 else attack.at(e))
            entry.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_study_dir / entry.relative_to(trained), entry)
        return real(model, key, data, attack, grid, *args, **kwargs)

    monkeypatch.setattr(logits, "get_grid", other_process_was_first)
    out = pc.precompute("digits", recipes, eps=[0.1])
    assert not out.computed and len(out.skipped) == 2


def test_evidence_units_compute_the_plan_once_per_model(trained, attack_calls):
    """--evidence: after a model's PGD units, one unit computes its evidence plan through evidence.ensure (AutoAttack
    on the whole split, never chunked); a re-run skips it."""
    from core.study import evidence

    recipes = pc.select_models("digits", "standard")
    out = pc.precompute("digits", recipes, eps=[0.1], evidence=True)
    assert [u.kind for u in out.computed] == ["pgd", "pgd", "evidence"] and not out.skipped
    assert out.evidence is not None and out.evidence.reliable.method == "autoattack-fast"
    assert evidence.is_complete(recipes[0], out.data, out.evidence)
    report = evidence.masking(recipes[0], out.data, out.evidence, 10)
    assert report is not None and not report.flagged and report.reliable_acc[0.1] <= report.pgd_acc[0.1]
    assert "AutoAttack at eps 0.1" in out.computed[-1].describe()
    calls = len(attack_calls)
    again = pc.precompute("digits", recipes, eps=[0.1], evidence=True)
    assert not again.computed and [u.kind for u in again.skipped] == ["pgd", "pgd", "evidence"]
    assert len(attack_calls) == calls


def test_autoattack_is_never_computed_in_chunks():
    from core.study.hyper import reliable_attack

    unit = pc.Unit("standard", "k", 0.1, 0, 128, 3)
    x, y = torch.zeros(360, 1, 8, 8), torch.zeros(360, dtype=torch.long)
    with pytest.raises(LogitscopeError, match="cannot be computed chunk by chunk"):
        units.attack_chunk(None, unit, x, y, reliable_attack("digits"), 64, lambda b, n: None, DataSpec("digits", "test"), "cpu")


def test_the_command_line_reports_the_evidence_it_computed(trained, capsys):
    assert main(["precompute", "--models", "standard", "--eps", "0.1", "--evidence", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "computed 3 units, 0 already cached" in printed
    assert "evidence: Linf AutoAttack (APGD-CE + APGD-T, 100 iterations) at eps 0.1" in printed
