"""Recipes trained in groups (`ensure_models`): each checkpoint is the one training alone would write."""

from __future__ import annotations

from dataclasses import replace

import torch

from core.engine.data import load_dataset
from core.engine.models import load_checkpoint, read_checkpoint_config
from core.study.recipes import (
    checkpoint_path,
    default_recipes,
    ensure_model,
    ensure_models,
    group_key,
    is_trained,
    student_recipe,
    teacher_recipes,
)


def _short(recipe, epochs=2):
    """The recipe with fewer epochs (its own key): a few seconds of training."""
    return replace(recipe, spec=replace(recipe.spec, train=replace(recipe.spec.train, epochs=epochs)))


def test_group_keys_gather_seeds_and_students_of_one_teacher():
    seed0, seed1 = default_recipes("digits", 0), default_recipes("digits", 1)
    by = {r.name: r for r in seed0}
    assert group_key(by["pgd-at"]) == group_key({r.name: r for r in seed1}["pgd-at"])  # seeds of one recipe
    students = [r for r in seed0 if r.teacher is not None and r.teacher.name == "pgd-at"]
    assert len({group_key(r) for r in students}) == 1  # every manipulation of one teacher
    assert group_key(by["pgd-at"]) != group_key(by["standard"])  # another method
    assert group_key(by["pgd-at"]) != group_key(by["trades"])


def test_grouped_checkpoints_match_training_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("LOGITSCOPE_CACHE", str(tmp_path / "alone"))
    monkeypatch.setenv("LOGITSCOPE_TRAIN_PRECISION", "float32")
    teacher = _short(teacher_recipes("digits")[0])
    students = [student_recipe(teacher, m, epochs=2) for m in ("none", "shuffle_nonmax")]
    seeds = [_short(teacher_recipes("digits", s)[0]) for s in (1, 2)]
    wanted = students + seeds
    alone = {}
    for r in wanted:
        alone[r.key] = load_checkpoint(ensure_model(r), "cpu", r.key)
    monkeypatch.setenv("LOGITSCOPE_CACHE", str(tmp_path / "grouped"))
    started = []
    paths = ensure_models(wanted, group=True, on_start=lambda r: started.append(r.key))
    assert paths == [checkpoint_path(r) for r in wanted] and all(is_trained(r) for r in wanted)
    assert started[0] == teacher.key and sorted(started[1:]) == sorted(r.key for r in wanted)  # teacher first
    x = load_dataset("digits").x_test
    for r in wanted:
        config = read_checkpoint_config(checkpoint_path(r))
        assert config["key"] == r.key and config["name"] == r.name and config["precision"] == "float32"
        assert config["trained_with"] == 2  # it trained in a group of two
        net = load_checkpoint(checkpoint_path(r), "cpu", r.key)
        with torch.no_grad():
            agree = (net(x).argmax(1) == alone[r.key](x).argmax(1)).float().mean().item()
        assert agree >= 0.94  # tests/test_engine_group.py states the tolerance
    started.clear()
    ensure_models(wanted, group=True, on_start=lambda r: started.append(r.key))
    assert started == []  # all cached: nothing trains again
