"""A cache written by an earlier version of Logitscope is still read: same keys, same paths, same files.

`fixtures/premove_cache` was written by the code as it was before core/ moved into layers
(engine, study, app): `record.json` holds the keys and cache paths that code gave the default
study's recipes, its evaluation attack and split, and `logits/` two entries it wrote (16 digits
test images of an untrained standard model, clean and under PGD-20 at eps 0.1). They are stored as
`*.logits-entry` (safetensors files of logits, not weights) and copied under their cache names.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from core.config import AttackSpec, DataSpec, cache_dir
from core.engine.data import load_dataset
from core.engine.logits import entry_path, get_grid, read
from core.study.hyper import eval_attack, eval_data
from core.study.recipes import checkpoint_path, default_recipes, fast_at_recipe

FIXTURE = Path(__file__).parent / "fixtures" / "premove_cache"
RECORD = json.loads((FIXTURE / "record.json").read_text())


def _old_cache(cache):
    """The entries the old code wrote, placed where it wrote them."""
    for rel in RECORD["entries"].values():
        source = (FIXTURE / rel).with_suffix(".logits-entry")
        (cache / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, cache / rel)


def _recipes():
    out = {f"{seed}:{r.name}": r for seed in (0, 1) for r in default_recipes("digits", seed)}
    out["0:fast-at"] = fast_at_recipe("digits")
    return out


def test_recipes_keep_their_keys_and_checkpoint_paths():
    recipes = _recipes()
    assert set(recipes) == set(RECORD["recipes"])
    for name, r in recipes.items():
        assert r.key == RECORD["recipes"][name]["key"], name
        assert checkpoint_path(r).relative_to(cache_dir()).as_posix() == RECORD["recipes"][name]["checkpoint"], name


def test_the_evaluation_attack_and_split_keep_their_keys():
    assert eval_attack("digits").to_dict() == RECORD["eval_attack"]
    assert eval_attack("digits").key() == RECORD["eval_attack_key"]
    assert eval_data("digits").key() == RECORD["eval_data_key"]


def test_entries_written_before_the_move_are_read_and_never_recomputed(isolated_cache):
    _old_cache(isolated_cache)
    std = _recipes()["0:standard"]
    data = DataSpec.from_dict(RECORD["data"])
    attack = AttackSpec.from_dict(RECORD["eval_attack"])
    for eps, rel in RECORD["entries"].items():
        at = None if float(eps) == 0 else attack.at(float(eps))
        assert entry_path(std.key, data, at).relative_to(cache_dir()).as_posix() == rel
        assert read(std.key, data, at) is not None, f"the entry at eps {eps} was not read"

    def must_not_compute():
        raise AssertionError("a cached entry was computed again")

    grid = get_grid(must_not_compute, std.key, data, attack, [0.0, 0.1])
    labels = load_dataset("digits").y_test[:16]
    for eps in (0.0, 0.1):
        assert torch.equal(grid[eps].labels, labels)
        assert grid[eps].logits.shape == (16, 10) and torch.isfinite(grid[eps].logits).all()
    assert not torch.equal(grid[0.0].logits, grid[0.1].logits)  # the attacked entry is its own


@pytest.mark.parametrize("eps", ["0.0", "0.1"])
def test_a_damaged_old_entry_counts_as_missing(isolated_cache, eps):
    _old_cache(isolated_cache)
    std = _recipes()["0:standard"]
    path = isolated_cache / RECORD["entries"][eps]
    path.write_bytes(path.read_bytes()[:-7])
    at = None if float(eps) == 0 else AttackSpec.from_dict(RECORD["eval_attack"]).at(float(eps))
    assert read(std.key, DataSpec.from_dict(RECORD["data"]), at) is None
