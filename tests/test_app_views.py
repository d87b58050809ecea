"""The per-page computations (core.app.views, core.app.prepare, core.app.samples, core.app.embedding, core.app.overview)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from core.app import embedding, overview, prepare, samples, views
from core.engine import analysis
from core.errors import LogitscopeError
from core.study.findings import Finding
from core.study.hyper import eval_attack, hyper
from core.study.recipes import default_recipes, load_model


def _bundle() -> views.LogitSet:
    """Two models, two epsilons, four samples, three classes; numbers chosen by hand."""
    labels = np.array([0, 1, 2, 0])
    a = np.array([[[4, 1, 0], [0, 3, 1], [0, 0, 2], [1, 2, 0]],      # eps 0: samples 0-2 right, 3 wrong
                  [[2, 1, 0], [1, 1.5, 1], [1, 0, 0.5], [0, 2, 0]]], dtype=np.float32)
    b = a / 2
    return views.LogitSet(("a", "b"), (0.0, 0.1), labels, {"a": a, "b": b}, ("0", "1", "2"))


def test_sample_table_and_accuracy_curve_by_hand():
    bundle = _bundle()
    table = views.sample_table(bundle)
    assert len(table) == 2 * 2 * 4
    row = table[(table.model == "a") & (table.eps == 0.0) & (table.idx == 0)].iloc[0]
    assert (row.max_logit, row.logit_gap, row.margin, row.pred) == (4, 3, 3, 0)
    curve = views.accuracy_curve(table).set_index(["model", "eps"])["accuracy"]
    assert curve[("a", 0.0)] == 0.75 and curve[("a", 0.1)] == 0.5  # at 0.1 samples 2 and 3 are wrong
    assert curve[("b", 0.0)] == curve[("a", 0.0)]  # halving logits keeps the predictions


def test_quantity_values_summary_and_ks():
    bundle = _bundle()
    table = views.sample_table(bundle)
    values = views.quantity_values(bundle, table, 0.0, "max_logit")
    assert list(values.loc[values.model == "a", "value"]) == [4, 3, 2, 2]
    summary = views.summary(values).set_index("model")
    assert summary.loc["a", "mean"] == pytest.approx(2.75) and summary.loc["b", "mean"] == pytest.approx(1.375)
    assert summary.loc["a", "ks"] == 0.0 and summary.loc["b", "ks"] == pytest.approx(0.75)
    logits = views.quantity_values(bundle, table, 0.1, "logits", "correct")
    assert len(logits) == 2 * 4 * 3 and set(logits["group"]) == {"correct", "incorrect"}
    by_class = views.quantity_values(bundle, table, 0.0, "margin", "class")
    assert set(by_class["group"]) == {"class 0", "class 1", "class 2"}


def test_histogram_densities_integrate_to_one_and_clip_outliers():
    values = pd.DataFrame({"model": pd.Categorical(["m"] * 5), "group": "all", "value": [-10, 0.1, 0.5, 0.9, 10]})
    hist = analysis.histogram(values, 0.0, 1.0, bins=4)
    assert hist["count"].sum() == 5 and hist["count"].iloc[0] == 2 and hist["count"].iloc[-1] == 2
    assert (hist["density"] * (hist["end"] - hist["start"])).sum() == pytest.approx(1.0)


def test_distribution_changes_with_epsilon_and_keeps_its_axis():
    bundle = _bundle()
    table = views.sample_table(bundle)
    h0, s0 = views.distribution(bundle, table, 0.0, "max_logit")
    h1, s1 = views.distribution(bundle, table, 0.1, "max_logit")
    assert not s0.equals(s1)
    assert h0["start"].min() == h1["start"].min() and h0["end"].max() == h1["end"].max()


def _spread_bundle() -> views.LogitSet:
    """Two models, two epsilons, 200 samples of 10 classes whose labels come in no order, and one sample whose
    max logit is far above the others' (as a standard model's 21.5 against the rest's 17.5 or less)."""
    rng = np.random.default_rng(3)
    labels = rng.permutation(np.arange(200) % 10)
    logits = {m: (rng.standard_normal((2, 200, 10)) * s).astype(np.float32) for m, s in (("std", 3.0), ("at", 1.0))}
    logits["std"][1, 17, 4] = 40.0
    return views.LogitSet(("std", "at"), (0.0, 0.1), labels, logits, tuple(str(k) for k in range(10)))


@pytest.mark.parametrize("quantity", ["max_logit", "logit_gap", "margin", "confidence", "entropy", "logits"])
def test_the_histogram_range_holds_every_value_at_every_epsilon(quantity):
    """The defect: the axis stopped at the 99.5th percentile and the values above it piled into the last bin."""
    bundle = _spread_bundle()
    table = views.sample_table(bundle)
    per_model = 200 * (10 if quantity == "logits" else 1)
    for eps in bundle.eps:
        values = views.quantity_values(bundle, table, eps, quantity)
        hist, _ = views.distribution(bundle, table, eps, quantity)
        assert hist["start"].min() <= values["value"].min() and hist["end"].max() >= values["value"].max()
        for m in ("std", "at"):
            h = hist[hist["model"] == m]
            v = values.loc[values["model"] == m, "value"].to_numpy()
            assert h["count"].sum() == per_model
            # each bin holds exactly the values between its edges (none clipped in from outside)
            inside = [((v >= a) & ((v < b) | (b == h["end"].max()))).sum() for a, b in zip(h["start"], h["end"])]
            assert h["count"].tolist() == inside
    if quantity == "max_logit":
        assert hist["end"].max() == pytest.approx(40.0)


def test_split_groups_come_in_class_order_whatever_the_order_of_the_samples():
    """The defect: the class facets came in order of first appearance (7, 6, 3, 2, 8, ...)."""
    bundle = _spread_bundle()
    table = views.sample_table(bundle)
    assert list(dict.fromkeys(table["label"]))[:3] != [0, 1, 2]  # the samples are not in class order
    hist, summary = views.distribution(bundle, table, 0.1, "margin", "class")
    expected = [f"class {k}" for k in range(10)]
    assert list(dict.fromkeys(hist["group"])) == expected and list(dict.fromkeys(summary["group"])) == expected
    assert list(summary["model"][:2]) == ["std", "at"]
    hist, summary = views.distribution(bundle, table, 0.1, "margin", "correct")
    assert list(dict.fromkeys(hist["group"])) == ["correct", "incorrect"]
    assert views.group_names("none", bundle.classes) == ["all"]


def test_bad_view_parameters_raise_user_errors():
    bundle = _bundle()
    table = views.sample_table(bundle)
    with pytest.raises(LogitscopeError, match="not on the grid"):
        bundle.eps_index(0.05)
    with pytest.raises(LogitscopeError, match="Unknown quantity"):
        views.quantity_values(bundle, table, 0.0, "temperature")
    with pytest.raises(LogitscopeError, match="Unknown split"):
        views.quantity_values(bundle, table, 0.0, "max_logit", "weekday")
    with pytest.raises(LogitscopeError, match="two different"):
        views.confidence_pairs(table, "a", "a", 0.0)
    with pytest.raises(LogitscopeError, match="does not exist"):
        samples.sample_logits(bundle, ["a"], 0.0, 99)
    with pytest.raises(LogitscopeError, match="Unknown norm"):
        views.eps_grid("digits", "l3")


def test_confidence_pairs_statistics_and_top_differences():
    bundle = _bundle()
    table = views.sample_table(bundle)
    pairs = views.confidence_pairs(table, "a", "b", 0.0)
    assert list(pairs["idx"]) == [0, 1, 2, 3]
    assert (pairs["diff"] > 0).all()  # sharper logits, higher confidence
    stats = views.pair_statistics(pairs)
    assert stats["spearman"] == pytest.approx(1.0) and stats["n"] == 4
    a_more, b_more = views.top_pairs(pairs, 2)
    assert a_more["diff"].iloc[0] == pairs["diff"].max() and b_more["diff"].iloc[0] == pairs["diff"].min()
    assert set(pairs["outcome"]) == {"both correct", "both wrong"}
    bars = samples.sample_logits(bundle, ["a", "b"], 0.0, 0)
    assert len(bars) == 6 and list(bars.loc[bars.model == "a", "role"]) == ["true class", "other", "other"]


def test_l2_grid_scales_with_the_image_size():
    linf = views.eps_grid("digits", "linf")
    l2 = views.eps_grid("digits", "l2")
    assert linf == tuple(hyper("digits").eps_grid)
    assert l2[0] == 0 and l2[2] == pytest.approx(linf[2] * 4, rel=0.05)  # sqrt(64) / 2 = 4


def test_missing_lists_what_to_train_on_an_empty_cache():
    recipes = default_recipes("digits")[:2]
    needs = prepare.missing(recipes, views.Selection().data(), eval_attack("digits"), hyper("digits").eps_grid)
    assert [(n.recipe.name, n.what) for n in needs] == [("standard", "train"), ("pgd-at", "train")]
    assert "training standard" in needs[0].describe()


def test_evidence_missing_is_apart_from_the_pgd_grid_and_says_what_to_do():
    sel = views.Selection()
    recipes = default_recipes("digits")[:2]
    needs = prepare.evidence_missing(recipes, sel.data(), sel.evidence())
    assert [(n.recipe.name, n.what) for n in needs] == [("standard", "train"), ("pgd-at", "train")]
    assert "AutoAttack" in prepare.Need(recipes[1], "evidence").describe()
    # a job with the evidence plan is another job than the PGD grid's, and its key names the plan
    plain = prepare.job_key(recipes, sel.data(), sel.attack(), sel.grid())
    with_ev = prepare.job_key(recipes, sel.data(), sel.attack(), sel.grid(), sel.evidence())
    assert plain != with_ev
    assert prepare.evidence_key(sel.evidence()) != prepare.evidence_key(views.Selection(steps=10).evidence())
    stages = prepare._stages(recipes[1], sel.evidence())  # evidence.ensure's labels -> what the job shows
    assert len(stages) == len(sel.evidence().entries())
    texts = [t for t, _, _ in stages.values()]
    assert any("AutoAttack (APGD-CE + APGD-T" in t and t.endswith("on pgd-at at eps 0.1") for t in texts), texts
    assert sum(share for _, _, share in stages.values()) == pytest.approx(1.0)


def _finding(fid: str, verdict: str, effect: float, lo: float, hi: float, **kw) -> Finding:
    return Finding(fid, f"claim {fid}", verdict, effect, (lo, hi), kw.pop("n_seeds", 1), kw.pop("attack", "x"), **kw)


def test_a_finding_reads_with_its_verdict_effect_interval_seeds_and_attack():
    ev = views.Selection().evidence()
    line = overview.finding_line(_finding("3b-order", "not resolved with 1 seed", 0.028, -0.008, 0.064), ev)
    assert line.startswith("**3b-order \u2014 not resolved with 1 seed:** student of PGD-AT minus the shuffled-order "
                           "student, robust accuracy under Linf AutoAttack (APGD-CE + APGD-T")
    assert "at eps 0.1: **+0.028** [-0.008, +0.064] (95% interval over 1 seed" in line and "*claim 3b-order*" in line
    two = overview.finding_line(_finding("2", "holds", 0.66, 0.59, 0.71, null=0.9, n_seeds=1), ev)
    assert "on clean test images (no attack" in two and "**0.660** [0.590, 0.710], against the threshold 0.9" in two
    assert "AutoAttack" not in two
    details = {"max_logit": {"estimate": -6.1, "interval": [-6.3, -5.9]},
               "logit_gap": {"estimate": -5.3, "interval": [-5.5, -5.0]}}
    one = overview.finding_line(_finding("1", "reversed", -6.1, -6.3, -5.9, n_seeds=3, details=details,
                                         note="the logit gap: reversed"), ev)
    assert one.startswith("**1 \u2014 reversed:**") and "mean max logit **-6.10** [-6.30, -5.90]" in one
    assert "mean logit gap **-5.30** [-5.50, -5.00]" in one and "over 3 seeds" in one
    assert "the logit gap: reversed" in one


def test_findings_on_an_empty_cache_say_what_each_waits_for():
    sel = views.Selection()
    per_seed = overview.seed_recipes("digits", 3)
    assert [len(r) for r in per_seed] == [6, 6, 6] and per_seed[1][0].spec.train.seed == 1
    assert {r.name for r in per_seed[0]} == set(overview.FINDING_MODELS)
    view = overview.findings_view(per_seed, sel.data(), sel.evidence())
    assert view.lines == () and view.missing_seeds == (1, 2) and view.seeds_asked == 3
    text = "\n".join(view.waiting)
    assert "**1 and 2** are not stated yet: they wait for the clean logits of PGD-AT, Standard" in text
    assert "**3a** is not stated yet: it waits for AutoAttack at eps 0.1 on Student of PGD-AT (untouched)" in text
    assert "not trained yet" in text and "Student of Standard (untouched)" in text
    assert "Seeds 1, 2 of the 3 asked are not trained and evaluated yet" in text


def test_study_views_read_the_cache_fast(study_cache):
    sel = views.Selection()
    recipes = {r.name: r for r in default_recipes("digits")}
    assert prepare.missing(list(recipes.values()), sel.data(), sel.attack(), sel.grid()) == []
    bundle = views.load_logit_set({n: recipes[n] for n in sel.models}, sel.data(), sel.attack(), sel.grid())
    table = views.sample_table(bundle)
    views.distribution(bundle, table, 0.1, "max_logit")  # warm-up
    start = time.perf_counter()
    for eps in sel.grid():
        views.distribution(bundle, table, eps, "max_logit", "correct")
    per_call = (time.perf_counter() - start) / len(sel.grid())
    assert per_call < 0.1, f"an epsilon change takes {per_call * 1000:.0f} ms"
    ev = sel.evidence()
    found = views.model_evidence(recipes, sel.data(), ev)
    table_ = overview.model_table(recipes, sel.data(), sel.attack(), sel.grid(), 0.1, ev, found)
    pgd = overview.pgd_column(sel.attack(), 0.1)
    assert pgd == "PGD-20 @ eps 0.1 (upper bound)" and overview.reliable_column(ev) in table_.columns
    assert table_["status"].str.match(r"^(ready|PGD ready; .*not computed yet)$").all(), table_["status"]
    assert table_.set_index("model").loc["pgd-at", pgd] > table_.set_index("model").loc["standard", pgd]
    assert set(overview.cache_summary()["part"]) >= {"models", "logits"}


def test_adversarial_example_reproduces_the_cached_logits(study_cache):
    sel = views.Selection()
    recipe = {r.name: r for r in default_recipes("digits")}["pgd-at"]
    bundle = views.load_logit_set({"pgd-at": recipe}, sel.data(), sel.attack(), sel.grid())
    model = load_model(recipe)
    adv = samples.adversarial_example(model, sel.data(), sel.attack(), 0.1, 5, bundle.at("pgd-at", 0.1)[5])
    assert adv.exact
    assert np.abs(adv.perturbation).max() <= 0.1 + 1e-6
    assert adv.adversarial.min() >= 0 and adv.adversarial.max() <= 1
    clean = samples.adversarial_example(model, sel.data(), sel.attack(), 0.0, 5, bundle.at("pgd-at", 0.0)[5])
    assert clean.exact and np.array_equal(clean.adversarial, clean.clean)
    with pytest.raises(LogitscopeError):
        samples.images(sel.data(), [10_000])


def test_embedding_is_cached_on_disk(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    logits = {m: rng.standard_normal((1, 60, 3)).astype(np.float32) + np.eye(3)[labels] * 3 for m in ("a", "b")}
    bundle = views.LogitSet(("a", "b"), (0.0,), labels, logits, ("0", "1", "2"))
    assert embedding.cached_embedding(bundle, 0.0, 10) is None
    emb = embedding.compute_embedding(bundle, 0.0, 10)
    assert len(emb) == 120 and set(emb["model"]) == {"a", "b"} and np.isfinite(emb[["x", "y"]].to_numpy()).all()
    again = embedding.cached_embedding(bundle, 0.0, 10)
    assert again is not None and np.allclose(again[["x", "y"]], emb[["x", "y"]])
    summary = embedding.selection_summary(emb[emb["model"] == "a"])
    assert summary["points"].tolist() == [60]


def test_a_selection_shows_every_models_share_and_thumbnails_from_each():
    """The defect: the thumbnails were the selection's first 48 rows, which all belonged to the first model."""
    emb = pd.DataFrame({"model": ["a"] * 100 + ["b"] * 10 + ["c"] * 60, "idx": np.r_[0:100, 0:10, 0:60],
                        "x": 0.0, "y": 0.0, "correct": [True, False] * 85, "confidence": 0.5})
    summary = embedding.selection_summary(emb[emb["model"] != "c"], ["a", "b", "c"]).set_index("model")
    assert summary["points"].tolist() == [100, 10, 0]
    assert summary["share"].tolist() == pytest.approx([100 / 110, 10 / 110, 0.0])
    shown = embedding.spread(emb, ["a", "b", "c"], 48)
    assert shown["model"].value_counts().to_dict() == {"a": 19, "c": 19, "b": 10}  # b gives all it has
    assert list(dict.fromkeys(shown["model"])) == ["a", "b", "c"] and not shown.index.duplicated().any()
    assert len(embedding.spread(emb, ["a", "b", "c"], 500)) == 170
    assert embedding.spread(emb, ["z"], 48).empty  # points of models not listed are not shown (and no hang)


def test_a_selection_round_trips_through_the_link():
    bounds = embedding.link_bounds((-1.23456, 2.34561, 0.5, 7.0001))
    assert bounds == (-1.235, 2.346, 0.5, 7.001)  # rounded outward: the rectangle still holds every point
    assert embedding.parse_bounds(embedding.bounds_text(bounds)) == bounds
    assert embedding.bounds_text(bounds) == "-1.235,2.346,0.5,7.001"
    for bad in ("1,2,3", "2,1,0,1", "0,1,nan,1", "a,b,c,d", "", "0,1,0,inf"):
        assert embedding.parse_bounds(bad) is None
    emb = pd.DataFrame({"x": [0.0, 1.0, 2.0], "y": [0.0, 1.0, 2.0]})
    assert embedding.points_in(emb, (0.5, 2.0, 0.0, 1.5)).index.tolist() == [1]


def test_the_summary_ks_column_equals_scipy():
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(0)
    for n, m in ((50, 70), (360, 360), (5, 3600)):
        a, b = rng.normal(size=n), rng.normal(0.3, 1.2, size=m)
        values = pd.DataFrame({"model": ["a"] * n + ["b"] * m, "group": "all", "value": np.concatenate([a, b])})
        s = views.summary(values, reference="a").set_index("model")
        assert s.loc["a", "ks"] == 0.0
        assert s.loc["b", "ks"] == pytest.approx(ks_2samp(b, a).statistic)
    ties = pd.DataFrame({"model": ["a"] * 4 + ["b"] * 4, "group": "all", "value": [1.0, 1.0, 2.0, 2.0] * 2})
    assert views.summary(ties, reference="a").set_index("model").loc["b", "ks"] == 0.0
