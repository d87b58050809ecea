"""The reproduction of the paper's findings as one report (a JSON-able dict) and its table.

`reproduce` trains (or reuses) every default recipe for each seed and evaluates it with the evidence
plan (`core.study.evidence`): PGD over the epsilon grid (the fast attack the pages scrub, an upper
bound on robust accuracy), AutoAttack at the findings' epsilon (the robust accuracy the report
states), and margin-loss and unbounded PGD for the gradient-masking check. Every number is read back
from the logits cache, says which attack made it, and comes with its 95% bootstrap interval over the
test images (and seeds, `core.engine.stats`); the findings' verdicts come from `core.study.findings`.
`format_report` (core.study.report_text) turns the report into the table and the findings' lines.
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial
from typing import Callable, Sequence

import numpy as np
import torch

from core.config import AttackSpec, DataSpec, check_eps, with_clean
from core.engine import analysis, stats
from core.engine.group import grouping_pays
from core.engine.logits import LogitsRecord, get_grid
from core.engine.models import load_checkpoint
from core.errors import LogitscopeError
from core.study import evidence, parallel
from core.study.evidence import Evidence
from core.study.hyper import eval_attack, eval_data
from core.study.recipes import Recipe, checkpoint_path, default_recipes, ensure_model, ensure_models, is_trained
from core.study.report_text import eps_label, format_report

__all__ = ["reproduce", "plan", "evaluate_model", "format_report", "eps_label", "N_BOOT", "LEVEL"]

Progress = Callable[[str, float], None]  # (what is running, fraction done in [0, 1])

CORRELATION_PAIRS = (("standard", "pgd-at"), ("standard", "trades"), ("pgd-at", "trades"))
N_BOOT = 2000   # bootstrap resamples per interval: the 2.5% tails of 2000 resamples move by < 0.005 between runs
LEVEL = 0.95
PER_IMAGE = {"clean_accuracy": "correct", "mean_max_logit": "max_logit", "mean_logit_gap": "logit_gap",
             "mean_confidence": "confidence"}  # report field -> per-sample column; each gets an interval
UPPER_BOUND = ("an upper bound on robust accuracy: PGD-20 is the fast attack, and a stronger one (AutoAttack) "
               "finds adversarial examples it misses")


def plan(dataset: str, attack: AttackSpec | None = None, eps_grid: Sequence[float] | None = None,
         reliable: str = "fast", reliable_eps: Sequence[float] | None = None, data_dir: str | None = None) -> Evidence:
    """The evidence plan of a report: PGD (`attack`, default the dataset's PGD-20) over `eps_grid` (default the
    dataset's), AutoAttack (`reliable`: "fast" or "standard") at the findings' epsilon plus `reliable_eps`.

    The findings' epsilon is the dataset's whatever the grid (`--eps` changes the PGD columns, not the
    findings), so the report and the app's overview state the same numbers. Raises LogitscopeError for a bad
    version or epsilon, before any work.
    """
    attack = attack or eval_attack(dataset)
    for e in [*(eps_grid or []), *(reliable_eps or [])]:
        check_eps(e, attack.norm)
    ev = evidence.evidence(dataset, attack.norm, attack.steps, reliable, attack.seed, reliable_eps, data_dir)
    return replace(ev, pgd=attack, grid=ev.grid if eps_grid is None else with_clean(eps_grid))


def _interval(per_seed: Sequence[np.ndarray]) -> stats.Interval:
    return stats.interval([np.asarray(v, dtype=np.float64) for v in per_seed], np.mean, N_BOOT, LEVEL)


def _estimate(iv: stats.Interval) -> dict:
    return {"estimate": iv.estimate, "interval": [iv.lo, iv.hi]}


def _correct(rec: LogitsRecord) -> np.ndarray:
    return (rec.logits.argmax(1) == rec.labels).numpy()


def _model_entry(recipe: Recipe, seed: int, ckpt: str, clean: LogitsRecord, pgd: dict[float, LogitsRecord],
                 robust: dict[float, LogitsRecord], masking: dict, ev: Evidence,
                 teacher_clean: LogitsRecord | None) -> tuple[dict, dict]:
    """(the model's JSON entry, its per-image values for intervals over seeds)."""
    table = analysis.per_sample(clean.logits, clean.labels)
    values = {field: table[col].to_numpy() for field, col in PER_IMAGE.items()}
    values["robust"] = {eps_label(e): _correct(r) for e, r in sorted(robust.items()) if e > 0}
    ivs = {field: _interval([values[field]]) for field in PER_IMAGE}
    robust_ivs = {e: _interval([v]) for e, v in values["robust"].items()}
    entry = {
        "name": recipe.name, "role": recipe.role, "method": recipe.spec.train.method,
        "teacher": recipe.teacher.name if recipe.teacher else None, "manipulation": recipe.manipulation,
        "seed": seed, "key": recipe.key, "checkpoint": ckpt,
        "clean_accuracy": ivs["clean_accuracy"].estimate,
        "clean_accuracy_interval": [ivs["clean_accuracy"].lo, ivs["clean_accuracy"].hi],
        "robust_accuracy": {e: iv.estimate for e, iv in robust_ivs.items()},
        "robust_accuracy_interval": {e: [iv.lo, iv.hi] for e, iv in robust_ivs.items()},
        "robust_accuracy_attack": ev.reliable.describe(),
        "pgd_accuracy": {eps_label(e): analysis.accuracy(r.logits, r.labels) for e, r in sorted(pgd.items()) if e > 0},
        "pgd_accuracy_attack": f"{ev.pgd.describe()}: an upper bound",
    }
    for field in PER_IMAGE:
        if field != "clean_accuracy":
            entry[field], entry[f"{field}_interval"] = ivs[field].estimate, [ivs[field].lo, ivs[field].hi]
    entry.update(mean_margin=float(table.margin.mean()), mean_entropy=float(table.entropy.mean()), masking=masking)
    if teacher_clean is not None:
        entry["incorrect_order_agreement"] = float(analysis.incorrect_class_order_agreement(
            teacher_clean.logits, clean.logits, clean.labels).mean())
    return entry, values


def _masking(recipe: Recipe, data: DataSpec, ev: Evidence, n_classes: int) -> dict:
    rep = evidence.masking(recipe, data, ev, n_classes)
    if rep is None:  # ensure() has just computed every entry: only a file broken since then gets here
        raise LogitscopeError(f"The evidence of {recipe.name} is missing from the cache right after it was computed: "
                              "check the disk and run again.")
    return {"flagged": rep.flagged, "reasons": list(rep.reasons),
            "margin_pgd_accuracy": {eps_label(e): a for e, a in sorted((rep.margin_acc or {}).items()) if e > 0},
            "unbounded_pgd_accuracy": rep.unbounded_acc, "autoattack_warnings": list(rep.warnings)}


def _summary(models: list[dict], seen: dict[str, list[dict]]) -> dict:
    """Per model name, over seeds: estimate and interval (hierarchical bootstrap: seeds, then images)."""
    out = {}
    for name, per in seen.items():
        ms = [m for m in models if m["name"] == name]
        s: dict = {"n_seeds": len(per)}
        if len(per) == 1:  # one seed: the model's own intervals (the same bootstrap)
            m = ms[0]
            s.update({f: {"estimate": m[f], "interval": m[f"{f}_interval"]} for f in PER_IMAGE})
            s["robust_accuracy"] = {e: {"estimate": a, "interval": m["robust_accuracy_interval"][e]}
                                    for e, a in m["robust_accuracy"].items()}
        else:
            s.update({f: _estimate(_interval([p[f] for p in per])) for f in PER_IMAGE})
            s["robust_accuracy"] = {e: _estimate(_interval([p["robust"][e] for p in per])) for e in per[0]["robust"]}
        s["pgd_accuracy"] = {e: {"mean": float(np.mean([m["pgd_accuracy"][e] for m in ms])),
                                 "std": float(np.std([m["pgd_accuracy"][e] for m in ms]))} for e in ms[0]["pgd_accuracy"]}
        order = [m["incorrect_order_agreement"] for m in ms if "incorrect_order_agreement" in m]
        s["incorrect_order_agreement"] = float(np.mean(order)) if order else None
        s["masking_flagged"] = sum(bool(m["masking"]["flagged"]) for m in ms)
        out[name] = s
    return out


def _evidence_labels(ev: Evidence) -> dict[str, str]:
    """`evidence.ensure`'s attack descriptions -> short names for the progress bar."""
    return {ev.pgd.describe(): f"PGD-{ev.pgd.steps}", ev.reliable.describe(): "AutoAttack",
            ev.margin.describe(): "margin PGD", ev.unbounded.describe(): "unbounded PGD"}


STAGE_SHARES = {"train": (0.0, 0.3), "PGD": (0.3, 0.07), "AutoAttack": (0.37, 0.55), "margin PGD": (0.92, 0.03),
                "unbounded PGD": (0.95, 0.05), "finished": (1.0, 0.0)}  # (start, share) of a model's work on digits


def evaluate_model(recipe: Recipe, data: DataSpec, ev: Evidence, device: str | torch.device, data_dir: str | None,
                   report: Progress) -> dict:
    """One model's unit of `reproduce`: train it if missing, PGD over the grid, then its evidence; all into the cache.

    Returns {"checkpoint": path, "seconds": {"train", "pgd", "evidence"}}; `report(stage, fraction)` with
    stage "train", "PGD", an evidence attack's short name ("AutoAttack", "margin PGD", "unbounded PGD"), then
    "finished".
    """
    seconds = {}
    t = time.perf_counter()
    ckpt = ensure_model(recipe, device, lambda p: report("train", p.fraction), data_dir=data_dir)
    seconds["train"], t = time.perf_counter() - t, time.perf_counter()
    source = partial(load_checkpoint, ckpt, device, recipe.key)
    get_grid(source, recipe.key, data, ev.pgd, ev.grid, device, on_batch=lambda d, n: report("PGD", d / n),
             data_dir=data_dir)
    seconds["pgd"], t = time.perf_counter() - t, time.perf_counter()
    short = _evidence_labels(ev)

    def on_evidence(what: str, fraction: float) -> None:
        stage = short.get(what.partition(": ")[2], "")
        if stage != short[ev.pgd.describe()]:  # the PGD grid is cached by now
            report(stage, fraction)

    evidence.ensure(source, recipe, data, ev, device, progress=on_evidence, data_dir=data_dir)
    seconds["evidence"] = time.perf_counter() - t
    report("finished", 1.0)
    return {"checkpoint": str(ckpt), "seconds": seconds}


def _unit_progress(units: Sequence[tuple[int, Recipe]], say: Progress) -> parallel.UnitProgress:
    """Workers' (unit, stage, fraction) -> one bar: "reproduce | 3/10 models, AutoAttack seed 0 pgd-at"."""
    done = [0.0] * len(units)

    def on_unit(index: int, stage: str, fraction: float) -> None:
        start, share = STAGE_SHARES.get(stage, (0.0, 0.0))
        done[index] = max(done[index], start + share * min(max(fraction, 0.0), 1.0))
        seed, recipe = units[index]
        finished = sum(d >= 1.0 for d in done)
        say(f"reproduce | {finished}/{len(units)} models, {stage} seed {seed} {recipe.name}", sum(done) / len(units))

    return on_unit


def reproduce(dataset: str = "digits", seeds: Sequence[int] = (0,), eps_grid: Sequence[float] | None = None,
              attack: AttackSpec | None = None, device: str | torch.device = "cpu", data_dir: str | None = None,
              progress: Progress | None = None, recipes: Callable[[str, int], list[Recipe]] = default_recipes,
              reliable: str = "fast", reliable_eps: Sequence[float] | None = None, workers: int | None = None) -> dict:
    """Train or reuse every recipe for every seed, evaluate it with the evidence plan (`plan`), return the report.

    Each model is one unit (`evaluate_model`: training, PGD over the grid, AutoAttack and the masking
    check's attacks), run by `workers` processes (default: one per CPU core, `core.study.parallel`;
    teachers first); models whose entries are all cached need no unit. Every entry lands in the logits
    cache, so a second run reads it all back in seconds. The report is then read from the cache.
    """
    start = time.perf_counter()
    ev = plan(dataset, attack, eps_grid, reliable, reliable_eps, data_dir)
    data = eval_data(dataset)  # all test images, except for large datasets
    say = progress or (lambda what, frac: None)
    per_seed = [(seed, recipes(dataset, seed)) for seed in seeds]
    todo = [(seed, r) for seed, chosen in per_seed for r in chosen
            if not (is_trained(r) and evidence.is_complete(r, data, ev))]
    todo.sort(key=lambda unit: unit[1].teacher is not None)  # teachers first: students wait for them otherwise
    n_workers = workers or parallel.default_workers(device, len(todo))
    if todo and grouping_pays(device):  # seeds and students of one teacher train together; units then find them
        t = time.perf_counter()
        say(f"reproduce | training {len(todo)} models in groups", 0.0)
        ensure_models([r for _, r in todo], device, data_dir=data_dir, group=True,
                      progress=lambda p: say(f"reproduce | training in groups: epoch {p.epoch}/{p.epochs}", 0.0))
        grouped_seconds = time.perf_counter() - t
    else:
        grouped_seconds = 0.0
    results = parallel.run_units(evaluate_model, [(r, data, ev, device, data_dir) for _, r in todo], n_workers,
                                 _unit_progress(todo, say))
    stages = {k: sum(res["seconds"][k] for res in results) for k in ("train", "pgd", "evidence")}
    stages["train"] += grouped_seconds
    t = time.perf_counter()
    models, correlations, seen = [], [], {}
    for seed, chosen in per_seed:
        clean_by_name = {}
        for recipe in chosen:
            source = partial(load_checkpoint, checkpoint_path(recipe), device, recipe.key)
            read = partial(get_grid, source, recipe.key, data, device=device, data_dir=data_dir)
            pgd, robust = read(ev.pgd, ev.grid), read(ev.reliable, ev.reliable_eps)
            clean = clean_by_name[recipe.name] = pgd[0.0]
            teacher_clean = clean_by_name.get(recipe.teacher.name) if recipe.teacher else None
            entry, values = _model_entry(recipe, seed, str(checkpoint_path(recipe)), clean, pgd, robust,
                                         _masking(recipe, data, ev, clean.logits.shape[1]), ev, teacher_clean)
            models.append(entry)
            seen.setdefault(recipe.name, []).append(values)
            if recipe.teacher is not None and teacher_clean is not None:
                pairs = [(recipe.teacher.name, recipe.name)]
            else:
                pairs = [(a, b) for a, b in CORRELATION_PAIRS if b == recipe.name and a in clean_by_name]
            for a, b in pairs:
                conf = [analysis.per_sample(clean_by_name[n].logits, clean_by_name[n].labels).confidence for n in (a, b)]
                correlations.append({"a": a, "b": b, "seed": seed, **analysis.rank_correlation(*conf)})
    findings = [f.to_dict() for f in evidence.findings([chosen for _, chosen in per_seed], data, ev)]
    summary = _summary(models, seen)
    stages["statistics"] = time.perf_counter() - t
    return {"dataset": dataset, "eps": list(ev.grid), "attack": ev.pgd.to_dict(), "attack_label": ev.pgd.describe(),
            "pgd_accuracy_note": UPPER_BOUND, "reliable_attack": ev.reliable.to_dict(),
            "reliable_attack_label": ev.reliable.describe(), "reliable_eps": [e for e in ev.reliable_eps if e > 0],
            "finding_eps": ev.eps, "interval": {"level": LEVEL, "n_boot": N_BOOT, "method": (
                "percentile bootstrap over the test images (with several seeds: over seeds, then images)")},
            "n_images": len(next(iter(seen.values()))[0]["clean_accuracy"]) if seen else 0,
            "seeds": list(seeds), "seconds": time.perf_counter() - start, "workers": n_workers if todo else 0,
            "stage_seconds": stages, "models": models, "summary": summary, "findings": findings,
            "confidence_rank_correlation": correlations}
