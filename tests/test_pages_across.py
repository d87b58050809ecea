"""The "Across models" page through Streamlit's AppTest: the trained digits study, swept models added to a copy
of its cache, an empty cache and the hosted demo."""

from __future__ import annotations

import re
import shutil
from urllib.parse import parse_qsl

import pytest
import torch
from apptest import no_exception, open_page, texts

from core.app import bundle as B
from core.app import demo as core_demo
from core.app import jobs
from core.engine import data as core_data
from core.engine import logits as L
from core.study import sweep
from core.study.hyper import eval_attack, eval_data
from core.study.recipes import default_recipes

Y_COLUMN = "robust accuracy at eps {:g}"


@pytest.fixture(autouse=True)
def no_jobs_left():
    jobs.clear()
    yield
    jobs.clear()


def said(at) -> str:
    """What the page says, its verdict (a success or warning notice) included."""
    return texts(at) + "\n".join(e.body for e in at.success)


def table(at):
    """The page's table of plotted models (the last dataframe)."""
    return at.dataframe[-1].value


def test_the_page_plots_every_model_of_the_study_with_the_attack_of_each_number(app_cache):
    at = open_page("across")
    no_exception(at)
    t = table(at)
    assert len(t) == len(default_recipes("digits")) and "PGD-AT" in set(t["model"])
    assert set(t["attack"].str.contains("AutoAttack")) == {True}  # the study computes AutoAttack at eps 0.1
    verdict = said(at)
    assert "Spearman's rho" in verdict and ("Resolved across 10 models" in verdict or "Not resolved with 10" in verdict)
    assert "Not plotted" not in texts(at)
    assert [b.label for b in at.get("download_button")] == ["Download the table behind the chart (CSV, one row per "
                                                            "model)"]


def test_the_statistic_and_epsilon_change_the_frame(app_cache):
    at = open_page("across")
    before = table(at)
    at.selectbox(key="w.x").set_value("mean_logit_gap").run()
    no_exception(at)
    after = table(at)
    x_cols = [c for c in after.columns if c.startswith("x: ")]
    assert x_cols == ["x: mean logit gap (max minus second-largest), clean test images"]  # the axis title's two lines
    assert list(after[x_cols[0]]) != list(before[[c for c in before.columns if c.startswith("x: ")][0]])
    at.selectbox(key="w.x").set_value("confidence_rank_corr").run()
    ranked = table(at).set_index("model")
    assert ranked.loc["Standard", [c for c in ranked.columns if c.startswith("x: ")][0]].startswith("1.000")
    at.sidebar.select_slider(key="w.eps").set_value(0.2).run()
    no_exception(at)
    moved = table(at)
    assert Y_COLUMN.format(0.2) in moved.columns and Y_COLUMN.format(0.1) not in moved.columns
    assert moved["attack"].str.endswith(": an upper bound").all()  # no AutoAttack at 0.2: PGD, said so
    assert "an upper bound" in texts(at) and "--reliable-eps 0.2" in texts(at)
    at.sidebar.select_slider(key="w.eps").set_value(0.0).run()
    no_exception(at)
    assert "needs an epsilon above 0" in texts(at)


def test_a_picked_model_opens_on_the_other_pages_by_button_and_by_link(app_cache):
    at = open_page("across", {"pick": "trades"})
    no_exception(at)
    assert at.selectbox(key="w.pick").value == "trades"
    caption = next(c.value for c in at.caption if "Links to share" in c.value)
    links = dict(re.findall(r"\[([^\]]+)\]\(([^)]+)\)", caption))
    assert set(links) == {"Logit distributions", "Confidence differences"}
    path, _, query = links["Confidence differences"].partition("?")
    params = dict(parse_qsl(query))
    assert path == "differences" and params["a"] == "trades" and params["b"] == "standard"
    opened = open_page(path, params)  # a new session from the link: it reads what the across page wrote
    no_exception(opened)
    assert opened.selectbox(key="w.a").value == "trades" and opened.selectbox(key="w.b").value == "standard"
    assert opened.sidebar.multiselect(key="w.m").value == ["trades", "standard"]
    assert not [c for c in opened.sidebar.caption if c.value.startswith("Ignored link settings")]
    dist = open_page("distributions", dict(parse_qsl(links["Logit distributions"].partition("?")[2])))
    assert dist.sidebar.multiselect(key="w.m").value == ["trades", "standard"]
    at.button(key="open.distributions").click().run()  # the same session: the button carries the choice over
    no_exception(at)
    assert at.sidebar.multiselect(key="w.m").value == ["trades", "standard"]
    assert at.title[0].value == "Logit distributions"


def test_swept_models_are_plotted_and_one_without_logits_is_listed_with_its_command(app_cache):
    grid = sweep.SweepGrid("digits", methods=("pgd-at",), train_eps=(0.05, 0.3), seeds=(1,))
    done, todo = sweep.sweep_recipes(grid)
    sweep.remember_sweep("digits", [done, todo])
    src = {r.name: r for r in default_recipes("digits")}["pgd-at"]
    data, pgd = eval_data("digits"), eval_attack("digits")
    for attack in (None, pgd.at(0.1)):  # a copy of PGD-AT's logits, a little changed, as the swept model's
        rec = L.read(src.key, data, attack)
        L.put(done.key, data, attack, rec.logits * 0.9 + 0.01 * torch.randn_like(rec.logits), rec.labels)
    at = open_page("across", {"by": "source"})
    no_exception(at)
    t = table(at).set_index("model")
    assert t.loc["PGD-AT (eps 0.05, seed 1)", "source"] == "sweep"
    assert t.loc["PGD-AT (eps 0.05, seed 1)", "attack"].endswith(": an upper bound")  # no AutoAttack for it
    assert "Not plotted (1)" in texts(at)
    assert "python -m core sweep --dataset digits --methods pgd-at --train-eps 0.3 --seeds 1" in texts(at)


def test_an_empty_cache_says_what_to_run(monkeypatch):
    from pages import _waiting

    monkeypatch.setattr(_waiting, "bootstrap", lambda *args: None)  # no first-run training in this test
    at = open_page("across")
    no_exception(at)
    assert "has both clean logits and robust accuracy" in texts(at)
    assert "python -m core precompute --dataset digits --models standard" in texts(at)


@pytest.fixture
def served(_study_dir, tmp_path, monkeypatch):
    """The hosted demo serving a bundle of the trained study."""
    cache = tmp_path / "src" / "cache"
    shutil.copytree(_study_dir, cache, ignore=shutil.ignore_patterns("*.lock", "lab", "embeddings"))
    monkeypatch.setenv("LOGITSCOPE_CACHE", str(cache))
    bundle = B.write_bundle("digits", tmp_path / "digits-bundle.zip", maps=False).path
    monkeypatch.setenv(core_demo.ENV, str(bundle))
    monkeypatch.setattr(core_demo, "_started", {})
    monkeypatch.setattr(core_data, "_PROVIDED", {})
    yield bundle
    for d in core_demo._started.values():
        shutil.rmtree(d.cache, ignore_errors=True)


def test_the_page_works_in_the_hosted_demo(served):
    at = open_page("across", {"pick": "pgd-at"})
    no_exception(at)
    assert not at.error, [e.body for e in at.error]
    assert len(table(at)) >= 2 and at.button(key="open.differences")
