"""RobustBench's published leaderboard numbers, shipped as data (core/engine/zoo_published.json)."""

import json
import math

from core.engine import zoo_info
from core.engine.zoo_info import published


def table() -> dict:
    return json.loads(zoo_info.TABLE.read_text())


def test_table_is_well_formed():
    t = table()
    assert set(t) == {"source", "models"}
    assert "RobustBench" in t["source"] and "model_info" in t["source"]
    assert len(t["models"]) >= 70  # 76 CIFAR-10 Linf models in robustbench 1.1.1
    for key, row in t["models"].items():
        dataset, threat, name = key.split("/")
        assert (dataset, threat) == ("cifar10", "Linf") and name
        assert {"clean", "autoattack", "eps", "architecture"} <= set(row), key
        assert isinstance(row["architecture"], str) and row["architecture"], key
        assert set(row) - {"clean", "autoattack", "eps", "architecture"} <= {"from"}, key


def test_every_entry_is_a_fraction_with_autoattack_at_most_clean():
    for key, row in table()["models"].items():
        assert 0 <= row["autoattack"] <= row["clean"] <= 1, key
        assert 0.5 < row["clean"], key  # every CIFAR-10 zoo model is far above chance (10%)
        assert math.isclose(row["eps"], 8 / 255, rel_tol=0.03), key  # 8/255, or 0.031 for a few


def test_known_entries():
    p = published("cifar10", "Linf", "Wong2020Fast")
    assert (p.clean, p.autoattack, p.architecture) == (0.8334, 0.4321, "ResNet-18")
    assert math.isclose(p.eps, 8 / 255)
    s = published("cifar10", "Linf", "Standard")
    assert (s.clean, s.autoattack, s.architecture) == (0.9478, 0.0, "WideResNet-28-10")
    assert math.isclose(published("cifar10", "Linf", "Zhang2019Theoretically").eps, 0.031)


def test_unknown_model_is_none():
    assert published("cifar10", "Linf", "NoSuchModel2099") is None
    assert published("cifar10", "L2", "Wong2020Fast") is None
