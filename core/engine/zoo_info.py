"""What RobustBench publishes about its zoo models, read from a table shipped with Logitscope.

The PyPI package of RobustBench holds the models' constructors, not their leaderboard entries (clean
and AutoAttack accuracy, architecture). `zoo_published.json`, beside this module, holds those numbers
for the zoo's models, copied as data from RobustBench's leaderboard (model_info, see its "source"
field). The "Across models" page shows them beside the accuracies Logitscope measured, and the zoo's
dry run reads each model's architecture family from it.

Example:
    >>> p = published("cifar10", "Linf", "Wong2020Fast")
    >>> p.clean, p.autoattack, p.architecture   # fractions in [0, 1], e.g. (0.8334, 0.4321, "ResNet-18")
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

TABLE = Path(__file__).with_name("zoo_published.json")


@dataclass(frozen=True)
class Published:
    """RobustBench's leaderboard entry of one model: accuracies on the full test split, as fractions."""

    clean: float | None
    autoattack: float | None  # AutoAttack (standard version) at the leaderboard's epsilon
    eps: float | None          # that epsilon, pixel units (8/255 for CIFAR-10 Linf)
    architecture: str | None   # e.g. "WideResNet-28-10"


@lru_cache(maxsize=1)
def _table() -> dict:
    if not TABLE.is_file():
        return {}
    return json.loads(TABLE.read_text())


def published(dataset: str, threat: str, name: str) -> Published | None:
    """The leaderboard's numbers of a zoo model, None when the table does not list it."""
    row = _table().get("models", {}).get(f"{dataset}/{threat}/{name}")
    if row is None:
        return None
    return Published(row.get("clean"), row.get("autoattack"), row.get("eps"), row.get("architecture"))
