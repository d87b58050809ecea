"""What the overview page shows: the models and their state, the cache, and the findings with their verdicts.

Robust accuracy is the reliable attack's (AutoAttack at the findings' eps, `core.study.evidence`); the
PGD grid's accuracy at the sidebar's eps is shown beside it, labelled as PGD and an upper bound. The
findings are read from the cache for the default study of seeds 0..N-1 (`seed_recipes`), each as soon
as what it reads is cached: 1 and 2 need clean logits only; a 3 whose AutoAttack entries are missing is
stated provisionally from PGD at the findings' eps, labelled so, until they are there. A finding not
stated yet (or provisional) is listed in `FindingsView.waiting` with what it waits for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from core.app.palette import display_name
from core.app.prepare import logits_cached
from core.app.views import GRADIENTS_UNKNOWN, ModelEvidence
from core.config import AttackSpec, DataSpec, cache_dir, with_clean
from core.engine import analysis
from core.engine.logits import entry_ok, get_grid, read
from core.errors import LogitscopeError
from core.study import evidence
from core.study.evidence import Evidence
from core.study.findings import FINDING_MODELS, NEEDS, ROBUST_IDS, Finding  # the pages read the first two here too
from core.study.recipes import Recipe, default_recipes, is_trained

WHAT = {  # finding id -> the difference it measures, for a reader
    "3a": "student of PGD-AT minus the student of the standard model",
    "3b-confidence": "student of PGD-AT minus the global-confidence student",
    "3b-order": "student of PGD-AT minus the shuffled-order student",
}
SEEDS_MAX = 5  # the sidebar's "Seeds for the findings": each seed trains six more models


def _unavailable():
    raise LogitscopeError("not computed")


def reliable_column(ev: Evidence) -> str:
    return f"robust accuracy (AutoAttack @ eps {ev.eps:g})"


def pgd_column(attack: AttackSpec, eps: float) -> str:
    return f"PGD-{attack.steps} @ eps {eps:g} (upper bound)"


def model_table(models: dict[str, Recipe], data: DataSpec, attack: AttackSpec, grid: Sequence[float],
                eps: float, ev: Evidence, found: Mapping[str, ModelEvidence], lab_names: Sequence[str] = ()
                ) -> pd.DataFrame:
    """One row per model: how it was made, its accuracies, its gradient check, and what is ready.

    Robust accuracy is `found[name].reliable` (AutoAttack at the findings' eps); the PGD column is the
    grid's accuracy at `eps`, an upper bound. `status` says in words what a blank cell waits for.
    """
    robust, pgd = reliable_column(ev), pgd_column(attack, eps)
    rows = []
    for name, r in models.items():
        train, e = r.spec.train, found.get(name)
        row = {"model": name, "role": r.role, "method": "RobustBench" if r.zoo else train.method,
               "teacher": r.teacher.name if r.teacher else "", "manipulation": r.manipulation or "",
               "clean accuracy": np.nan, robust: np.nan if e is None or e.reliable is None else e.reliable,
               pgd: np.nan, "gradients": GRADIENTS_UNKNOWN if e is None else e.gradients, "mean max logit": np.nan,
               "status": "", "source": "lab run" if name in lab_names else "default study", "key": name}
        if not logits_cached(r, data, attack, grid):
            row["status"] = (f"trained; {attack.norm} PGD-{attack.steps} logits not computed" if is_trained(r)
                             else "not trained")
            clean = read(r.key, data, None)  # clean accuracy does not depend on the attack
            if clean is not None:
                row["clean accuracy"] = analysis.accuracy(clean.logits, clean.labels)
                row["mean max logit"] = float(clean.logits.max(dim=1).values.mean())
        else:
            rec = get_grid(_unavailable, r.key, data, attack, with_clean([eps]))
            clean, adv = rec[0.0], rec[float(eps)]
            row["clean accuracy"] = analysis.accuracy(clean.logits, clean.labels)
            row[pgd] = analysis.accuracy(adv.logits, adv.labels)
            row["mean max logit"] = float(clean.logits.max(dim=1).values.mean())
            row["status"] = "ready" if e is not None and e.report is not None else "PGD ready; " + (
                "masking check not computed yet" if e is not None and e.reliable is not None
                else "AutoAttack and the masking check not computed yet")
        rows.append(row)
    return pd.DataFrame(rows)


def twins(models: Mapping[str, Recipe], data: DataSpec) -> list[tuple[str, ...]]:
    """Groups of models whose cached clean logits are identical, bit for bit: the same model under two names.

    The default study's hard-labels student is one: it learns the labels alone with the standard model's
    seed, architecture, loss and schedule, so it is the standard model again. Models without cached clean
    logits are left out (reads only).
    """
    by_logits: dict[bytes, list[str]] = {}
    for name, r in models.items():
        rec = read(r.key, data, None)
        if rec is not None:
            by_logits.setdefault(rec.logits.numpy().tobytes(), []).append(name)
    return [tuple(names) for names in by_logits.values() if len(names) > 1]


def twins_note(groups: Sequence[Sequence[str]], display=str) -> str | None:
    """One sentence per group of identical models, for under a table or chart where they appear together."""
    if not groups:
        return None
    said = [" and ".join(f"**{display(n)}**" for n in g) for g in groups]
    why = (" (The hard-labels student learns the labels alone, with the standard model's seed, architecture, loss "
           "and schedule: it is the standard model trained again.)"
           if any(n.endswith(":hard_labels") for g in groups for n in g) else "")
    return ("Identical models: " + "; ".join(said) + " have the same logits on every clean test image, so their rows "
            "and curves coincide." + why)


def cache_summary() -> pd.DataFrame:
    """Files and megabytes per part of the cache (models, logits, lab runs, maps, datasets)."""
    root = cache_dir()
    labels = {"models": "trained models (checkpoints)", "logits": "logits (clean and under attack)",
              "lab": "distillation lab run table", "embeddings": "UMAP maps"}
    rows = []
    if root.is_dir():
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            files = [f for f in sub.rglob("*") if f.is_file() and not f.name.endswith(".lock")]
            rows.append({"part": sub.name, "what": labels.get(sub.name, "datasets and other files"),
                         "files": len(files), "MB": round(sum(f.stat().st_size for f in files) / 1e6, 2)})
    return pd.DataFrame(rows, columns=["part", "what", "files", "MB"])


def seed_recipes(dataset: str, seeds: int, seed0: Mapping[str, Recipe] | None = None) -> list[list[Recipe]]:
    """The findings' models (FINDING_MODELS) of the default study trained with seeds 0..seeds-1.

    Seed 0's come from `seed0` (the app's catalog) when given, so they are exactly the models it shows.
    """
    out = []
    for s in range(seeds):
        by_name = {r.name: r for r in default_recipes(dataset, s)}
        if s == 0 and seed0 is not None:
            by_name.update({n: seed0[n] for n in FINDING_MODELS if n in seed0})
        out.append([by_name[n] for n in FINDING_MODELS if n in by_name])
    return out


def finding_ready(recipe: Recipe, data: DataSpec, ev: Evidence) -> bool:
    """All a finding reads of a model is cached: its clean logits and the reliable attack's at the findings' eps."""
    return entry_ok(recipe.key, data, None) and entry_ok(recipe.key, data, ev.reliable.at(ev.eps))


def finding_entries(recipe: Recipe, data: DataSpec, ev: Evidence) -> tuple[bool, bool, bool]:
    """Which entries the findings read of a model are cached: (clean logits, PGD at the findings' eps, the reliable
    attack's there). A few file checks: what the findings box is cached by, and what tells it to refresh."""
    return (entry_ok(recipe.key, data, None), entry_ok(recipe.key, data, ev.pgd.at(ev.eps)),
            entry_ok(recipe.key, data, ev.reliable.at(ev.eps)))


def findings_state(per_seed: Sequence[Sequence[Recipe]], data: DataSpec, ev: Evidence) -> tuple:
    """`finding_entries` of every model of `per_seed`: when it changes, so may the findings box."""
    return tuple(finding_entries(r, data, ev) for recipes in per_seed for r in recipes)


def _iv(lo: float, hi: float, fmt: str) -> str:
    return f"[{lo:{fmt}}, {hi:{fmt}}]"


def _pgd(ev: Evidence) -> str:
    return f"PGD-{ev.pgd.steps}"


def finding_numbers(f: Finding, ev: Evidence) -> str:
    """The finding's effect and interval in words, with the attack and epsilon that made them."""
    clean = "on clean test images (no attack, so no epsilon)"
    if f.id == "1" and {"max_logit", "logit_gap"} <= set(f.details):
        parts = [f"mean {k.replace('_', ' ')} **{d['estimate']:+.2f}** {_iv(*d['interval'], '+.2f')}"
                 for k, d in ((k, f.details[k]) for k in ("max_logit", "logit_gap"))]
        text = f"PGD-AT minus standard {clean}: {', '.join(parts)}"
    elif f.id == "2" and f.null:
        text = (f"Spearman correlation of the PGD-AT and standard models' confidences {clean}: "
                f"**{f.effect:.3f}** {_iv(*f.interval, '.3f')}, against the threshold {f.null:g}")
    elif f.id == "2":
        text = (f"Spearman correlation of the PGD-AT and standard confidences minus that of two standard models of "
                f"different seeds, {clean}: **{f.effect:+.3f}** {_iv(*f.interval, '+.3f')}")
    elif f.id in WHAT and f.provisional:
        text = (f"{WHAT[f.id]}, accuracy under {ev.pgd.describe()} at eps {ev.eps:g}, each an upper bound on robust "
                f"accuracy (provisional: {ev.reliable.describe()} at eps {ev.eps:g} is not computed yet): "
                f"**{f.effect:+.3f}** {_iv(*f.interval, '+.3f')}")
    elif f.id in WHAT:
        text = (f"{WHAT[f.id]}, robust accuracy under {ev.reliable.describe()} at eps {ev.eps:g}: "
                f"**{f.effect:+.3f}** {_iv(*f.interval, '+.3f')}")
    else:
        text = f"{f.quantity} ({f.attack}): **{f.effect:+.3f}** {_iv(*f.interval, '+.3f')}"
    seeds = f"{f.n_seeds} seed{'' if f.n_seeds == 1 else 's'}"
    return f"{text} ({f.level:.0%} interval over {seeds} and the test images)"


def finding_line(f: Finding, ev: Evidence) -> str:
    """Markdown: the id and verdict (a provisional one says under which attack), the numbers, then the claim."""
    note = f" ({f.note})" if f.note else ""
    verdict = f"{f.verdict} under {_pgd(ev)}, provisionally" if f.provisional else f.verdict
    return f"**{f.id} \u2014 {verdict}:** {finding_numbers(f, ev)}{note}.  \n*{f.claim}*"


@dataclass(frozen=True)
class FindingsView:
    """The findings box: one markdown paragraph per stated finding, and what the others wait for."""

    lines: tuple[str, ...]
    waiting: tuple[str, ...]        # in words: what a finding not stated (or provisional, or a seed left out) waits for
    seeds_asked: int
    missing_seeds: tuple[int, ...]  # seeds > 0 whose models are not all trained and evaluated
    attack: str                     # the reliable attack at the findings' eps, described
    provisional: tuple[str, ...] = ()  # the ids stated from PGD for now (an upper bound), AutoAttack missing


def _names(recipes: Sequence[Recipe]) -> str:
    return ", ".join(display_name(r.name) for r in recipes)


def _waits_for(fid: str, models: Sequence[Recipe], provisional: bool, data: DataSpec, ev: Evidence) -> str:
    """What a finding not stated (or stated provisionally) waits for, in words, from seed 0's models."""
    if fid in ROBUST_IDS:
        need = [r for r in models if not entry_ok(r.key, data, ev.reliable.at(ev.eps))]
        why = f"AutoAttack at eps {ev.eps:g} on {_names(need)}" if need else "its models in this study"
        if provisional:
            return f"{why} (stated under {_pgd(ev)} for now)"
    else:
        need = [r for r in models if not entry_ok(r.key, data, None)]
        why = f"the clean logits of {_names(need)}" if need else "its models in this study"
    untrained = [r for r in need if not is_trained(r)]
    return why + (f" ({_names(untrained)} not trained yet)" if untrained else "")


def findings_view(per_seed: Sequence[Sequence[Recipe]], data: DataSpec, ev: Evidence) -> FindingsView:
    """The findings' verdicts from the cache (`evidence.findings`, provisional ones included), and for the rest
    what is missing.

    per_seed[s]: the findings' recipes of seed s (`seed_recipes`). Reads only: nothing is computed.
    """
    found = {f.id: f for f in evidence.findings(per_seed, data, ev, provisional=True)}
    lines = tuple(finding_line(f, ev) for f in found.values())
    seed0 = {r.name: r for r in per_seed[0]} if per_seed else {}
    by_reason: dict[tuple[bool, str], list[str]] = {}
    for fid, names in NEEDS.items():
        f = found.get(fid)
        if f is None or f.provisional:
            models = [seed0[n] for n in names if n in seed0]
            by_reason.setdefault((f is not None, _waits_for(fid, models, f is not None, data, ev)), []).append(fid)
    waiting = [f"**{' and '.join(ids)}** {'is' if len(ids) == 1 else 'are'} "
               f"{'provisional' if provisional else 'not stated yet'}: {'it waits' if len(ids) == 1 else 'they wait'} "
               f"for {why}." for (provisional, why), ids in by_reason.items()]
    missing_seeds = tuple(s for s, recipes in enumerate(per_seed) if s > 0
                          and not all(finding_ready(r, data, ev) for r in recipes))
    if missing_seeds:
        waiting.append(f"Seed{'s' if len(missing_seeds) > 1 else ''} {', '.join(map(str, missing_seeds))} of the "
                       f"{len(per_seed)} asked {'are' if len(missing_seeds) > 1 else 'is'} not trained and "
                       f"evaluated yet: each finding above says how many seeds it uses for now.")
    return FindingsView(lines, tuple(waiting), len(per_seed), missing_seeds, ev.reliable.at(ev.eps).describe(),
                        tuple(fid for fid, f in found.items() if f.provisional))
