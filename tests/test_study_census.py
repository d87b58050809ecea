"""The census of models (core.study.census): hand-computed numbers read from small synthetic cache entries.

Every test writes its own entries with `core.engine.logits.put` into the test's empty cache (conftest's
`isolated_cache`), so nothing is trained or attacked.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from core.engine import logits as L
from core.engine.zoo_info import Published
from core.errors import LogitscopeError
from core.study import census as C
from core.study import sweep
from core.study.hyper import eval_attack, eval_data, reliable_attack
from core.study.recipes import default_recipes, zoo_recipe

DS = "digits"
DATA = eval_data(DS)
PGD = eval_attack(DS)
EPS = 0.1
# four images, three classes: max logits 3, 2, 4, 2.5; gaps 2, 0.5, 3, 0.5; predictions 0, 1, 2, 1
Z = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.5], [1.0, 0.0, 4.0], [2.0, 2.5, 0.0]])
Y = torch.tensor([0, 1, 1, 0])


def put_clean(key: str, z: torch.Tensor = Z) -> None:
    L.put(key, DATA, None, z, Y)


def put_attacked(key: str, correct: list[bool], version: str | None = None, eps: float = EPS) -> None:
    """An entry under attack at eps whose predictions are right exactly on `correct` (PGD, or AutoAttack `version`)."""
    pred = torch.where(torch.tensor(correct), Y, (Y + 1) % 3)
    z = torch.nn.functional.one_hot(pred, 3).float() * 5
    attack = PGD.at(eps) if version is None else reliable_attack(DS, "linf", version).at(eps)
    L.put(key, DATA, attack, z, Y, attacks=("apgd-ce",) if version else ())


def recipes(*names: str) -> dict:
    by_name = {r.name: r for r in default_recipes(DS)}
    return {n: by_name[n] for n in names}


def test_clean_statistics_and_accuracies_are_the_hand_computed_means_with_intervals_around_them():
    r = recipes("pgd-at")
    put_clean(r["pgd-at"].key)
    put_attacked(r["pgd-at"].key, [True, False, False, False])
    row = C.census(r, DS, eps=EPS, n_boot=500).iloc[0]
    p = np.exp(Z.numpy()) / np.exp(Z.numpy()).sum(1, keepdims=True)
    assert row["mean_max_logit"] == pytest.approx(2.875) and row["mean_logit_gap"] == pytest.approx(1.5)
    assert row["mean_confidence"] == pytest.approx(p.max(1).mean())
    assert row["clean_accuracy"] == pytest.approx(0.5) and row["robust_accuracy"] == pytest.approx(0.25)
    for c in ("mean_max_logit", "mean_logit_gap", "mean_confidence", "clean_accuracy", "robust_accuracy"):
        assert row[f"{c}_lo"] <= row[c] <= row[f"{c}_hi"] and row[f"{c}_lo"] < row[f"{c}_hi"], c
    assert 2.0 <= row["mean_max_logit_lo"] and row["mean_max_logit_hi"] <= 4.0  # within the values' range
    assert row["method"] == "pgd-at" and row["source"] == "default study" and row["train_eps"] == 0.2
    assert row["seed"] == 0 and row["arch"] == "digits_cnn" and row["n_images"] == 4 and bool(row["plotted"])
    assert row["eps"] == EPS and row["robust_attack"].endswith(C.UPPER_BOUND) and not row["robust_reliable"]
    assert row["pgd_accuracy"] == pytest.approx(0.25) and "PGD-20" in row["pgd_attack"]
    assert list(C.census(r, DS, eps=EPS, n_boot=50).columns) == C.COLUMNS


def test_a_constant_per_image_value_has_a_zero_width_interval():
    r = recipes("standard")
    put_clean(r["standard"].key, torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [2.0, 0, 0]]))
    put_attacked(r["standard"].key, [True] * 4)
    row = C.census(r, DS, eps=EPS, n_boot=200).iloc[0]
    assert row["mean_logit_gap"] == row["mean_logit_gap_lo"] == row["mean_logit_gap_hi"] == 2.0
    assert row["robust_accuracy"] == row["robust_accuracy_lo"] == row["robust_accuracy_hi"] == 1.0
    assert row["train_eps"] == 0.0 and row["method"] == "standard"  # standard training: eps 0


def test_autoattack_is_preferred_over_pgd_and_its_standard_version_over_the_fast_one():
    r = recipes("pgd-at")
    key = r["pgd-at"].key
    put_clean(key)
    put_attacked(key, [True, True, True, False])  # PGD: 0.75, an upper bound
    put_attacked(key, [True, True, False, False], "fast")  # AutoAttack fast: 0.5
    row = C.census(r, DS, eps=EPS, n_boot=100).iloc[0]
    assert row["robust_accuracy"] == 0.5 and bool(row["robust_reliable"]) and "AutoAttack" in row["robust_attack"]
    assert "eps 0.1" in row["robust_attack"] and not row["robust_attack"].endswith(C.UPPER_BOUND)
    assert row["pgd_accuracy"] == 0.75  # the PGD number stays beside it
    put_attacked(key, [True, False, False, False], "standard")  # AutoAttack standard: 0.25
    row = C.census(r, DS, eps=EPS, n_boot=100).iloc[0]
    assert row["robust_accuracy"] == 0.25 and "standard" in row["robust_attack"]
    only_fast = C.census(r, DS, eps=EPS, reliable="fast", n_boot=100).iloc[0]
    assert only_fast["robust_accuracy"] == 0.5
    at_other_eps = C.census(r, DS, eps=0.2, n_boot=100).iloc[0]  # nothing cached there
    assert not at_other_eps["plotted"] and math.isnan(at_other_eps["robust_accuracy"])


def test_the_rank_correlation_with_the_reference_is_spearmans_and_the_reference_has_one():
    r = recipes("standard", "pgd-at")
    put_clean(r["standard"].key)
    # pgd-at's confidences in the reverse order of standard's on two of the images
    z = Z.clone()
    z[[0, 2]] = z[[2, 0]]
    put_clean(r["pgd-at"].key, z)
    frame = C.census(r, DS, eps=EPS, reference="standard", n_boot=200).set_index("name")
    conf = lambda t: (torch.softmax(t, 1).max(1).values).numpy()  # noqa: E731
    a, b = pd.Series(conf(Z)).rank(), pd.Series(conf(z)).rank()
    assert frame.loc["standard", C.RANK_CORR] == pytest.approx(1.0)
    assert frame.loc["pgd-at", C.RANK_CORR] == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert frame.loc["pgd-at", "reference"] == "standard"
    assert not frame["plotted"].any()  # no entry under attack: not plotted, but its clean numbers are there
    none = C.census(r, DS, eps=EPS, reference="trades", n_boot=50)  # not among the recipes: no rank correlation
    assert none[C.RANK_CORR].isna().all() and none["reference"].isna().all()


def test_models_are_unique_by_key_and_an_uncached_model_is_listed_not_plotted():
    r = recipes("standard", "trades")
    r["also-standard"] = r["standard"]
    put_clean(r["standard"].key)
    put_attacked(r["standard"].key, [True, True, False, False])
    frame = C.census(r, DS, eps=EPS, n_boot=50)
    assert list(frame["name"]) == ["standard", "trades"]
    trades = frame.set_index("name").loc["trades"]
    assert not trades["clean_cached"] and not trades["plotted"] and math.isnan(trades["mean_max_logit"])


def test_sources_methods_and_training_eps_of_swept_students_and_zoo_models(monkeypatch):
    grid = sweep.SweepGrid(DS, methods=("standard", "fast-at"), train_eps=(0.1,), seeds=(1,),
                           students=("shuffle_nonmax",))
    swept = sweep.sweep_recipes(grid)
    sweep.remember_sweep(DS, swept)
    zoo = zoo_recipe("Wong2020Fast", "cifar10", "Linf")
    monkeypatch.setattr(C, "published", lambda ds, threat, name: Published(0.83, 0.43, 8 / 255, "PreActResNet-18")
                        if (ds, threat, name) == ("cifar10", "Linf", "Wong2020Fast") else None)
    rs = {**{r.name: r for r in swept}, zoo.name: zoo, **recipes("pgd-at")}
    frame = C.census(rs, DS, eps=EPS, n_boot=50).set_index("name")
    assert frame.loc["standard-s1", "source"] == "sweep" and frame.loc["standard-s1", "train_eps"] == 0.0
    assert frame.loc["fast-at-eps0.1-s1", "method"] == "fast-at" and frame.loc["fast-at-eps0.1-s1", "seed"] == 1
    student = frame.loc["student:fast-at-eps0.1-s1:shuffle_nonmax"]
    assert student["method"] == "student" and student["train_eps"] == 0.1 and student["source"] == "sweep"
    z = frame.loc["rb:Wong2020Fast"]
    assert z["source"] == "RobustBench" and z["method"] == "zoo" and z["train_eps"] == pytest.approx(8 / 255)
    assert z["arch"] == "PreActResNet-18" and z["published_clean"] == 0.83 and z["published_autoattack"] == 0.43
    assert z["threat"] == "Linf" and pd.isna(z["seed"])
    assert frame.loc["pgd-at", "source"] == "default study"
    monkeypatch.setattr(C, "published", lambda *a: None)  # not in the table: unknown, not zero
    z = C.census({zoo.name: zoo}, DS, eps=EPS, n_boot=50).iloc[0]
    assert math.isnan(z["train_eps"]) and math.isnan(z["published_clean"]) and z["arch"] is None


def test_epsilon_zero_is_refused_and_none_means_the_findings_epsilon():
    with pytest.raises(LogitscopeError, match="above 0"):
        C.census(recipes("standard"), DS, eps=0.0)
    assert C.census(recipes("standard"), DS, n_boot=10).iloc[0]["eps"] == 0.1  # digits' findings epsilon


def test_state_changes_when_an_entry_is_added():
    r = recipes("standard")
    before = C.state(r, DS, eps=EPS)
    put_clean(r["standard"].key)
    assert C.state(r, DS, eps=EPS) != before


# --- the trend across models ------------------------------------------------------------------------

def frame_of(x, y) -> pd.DataFrame:
    return pd.DataFrame({"x": np.asarray(x, float), "y": np.asarray(y, float)})


def test_a_monotone_relation_is_resolved_with_its_sign():
    up = C.trend(frame_of(range(8), [0.1, 0.2, 0.25, 0.3, 0.5, 0.55, 0.6, 0.9]), "x", "y", n_boot=500)
    assert up.spearman == pytest.approx(1.0) and up.resolved and up.lo > 0 and up.n == 8
    assert up.verdict.startswith("resolved") and "higher robust accuracy" in up.verdict
    assert up.slope > 0 and np.isfinite(up.intercept)
    xs = np.arange(8.0)
    ys = 0.9 - 0.1 * xs
    down = C.trend(frame_of(xs, ys), "x", "y", n_boot=500)
    assert down.slope == pytest.approx(-0.1) and down.intercept == pytest.approx(0.9)
    assert down.resolved and down.hi < 0 and "lower robust accuracy" in down.verdict


def test_no_relation_is_said_plainly_to_be_not_resolved_with_the_number_of_models():
    t = C.trend(frame_of([1, 2, 3, 4, 5, 6], [0.5, 0.2, 0.6, 0.1, 0.4, 0.3]), "x", "y", n_boot=500)
    assert t.lo < 0 < t.hi and not t.resolved and t.verdict == "not resolved with 6 models"


def test_two_models_make_no_interval_and_missing_values_are_left_out():
    t = C.trend(frame_of([1, 2, np.nan], [0.1, 0.2, 0.3]), "x", "y")
    assert t.n == 2 and math.isnan(t.lo) and not t.resolved and t.verdict == "not resolved with 2 models"
    assert t.slope == pytest.approx(0.1)
    assert C.trend(frame_of([], []), "x", "y").verdict == "not resolved with 0 models"


def test_the_seeds_of_one_recipe_are_resampled_together():
    assert C.recipe_group("pgd-at-eps0.1-s12") == "pgd-at-eps0.1"
    assert C.recipe_group("student:pgd-at-eps0.1-s2:none") == "student:pgd-at-eps0.1:none"
    assert C.recipe_group("trades-eps0.2-s0-small_cnn") == "trades-eps0.2-small_cnn"
    assert C.recipe_group("pgd-at") == "pgd-at" and C.recipe_group("rb:Wong2020Fast") == "rb:Wong2020Fast"
    # 3 recipes x 4 seeds, each recipe's seeds at one point: 12 models, but only 3 independent ones
    xs = np.repeat([1.0, 2.0, 3.0], 4) + np.tile([0.0, 0.01, 0.02, 0.03], 3)
    ys = np.repeat([0.3, 0.5, 0.4], 4) + np.tile([0.0, 0.001, 0.002, 0.003], 3)
    names = [f"{m}-eps0.1-s{s}" for m in ("pgd-at", "trades", "fast-at") for s in range(4)]
    frame = frame_of(xs, ys).assign(name=names)
    grouped, alone = C.trend(frame, "x", "y", n_boot=500), C.trend(frame_of(xs, ys), "x", "y", n_boot=500)
    assert grouped.spearman == pytest.approx(alone.spearman) and (grouped.n, grouped.groups) == (12, 3)
    assert grouped.hi - grouped.lo > alone.hi - alone.lo  # three independent draws, not twelve
    assert "(3 recipes, seeds resampled together)" in grouped.verdict and not grouped.resolved
    few = C.trend(frame.iloc[:8], "x", "y", n_boot=200)  # two recipes: no interval
    assert few.groups == 2 and math.isnan(few.lo)
