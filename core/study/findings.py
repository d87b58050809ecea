"""The findings' verdicts: each claim of the study tested on its evidence, with an effect and its interval.

A verdict is "holds" (the 95% interval of the effect lies on the claimed side), "reversed" (on the
other side) or "not resolved with N seeds" (it straddles the null). Effects are paired: two models
of the same seed on the same test images, resampled jointly (`core.engine.stats`). The inputs are
one `ModelResult` per model name per seed, built from the logits cache:

    per_seed = [{recipe.name: ModelResult.from_records(clean_record, attacked_record), ...}, ...]
    findings = compute_findings(per_seed, eps=0.1, attack_label="Linf AutoAttack (standard), eps 0.1")

    1              AT shrinks the max logit and the logit gap on clean images (both must hold)
    2              AT and standard models disagree on which images are confident (Spearman of their
                   confidences below the seed-to-seed agreement of two standard models; with one seed,
                   below a fixed 0.9)
    3a             the student of the AT teacher is more robust than the student of the standard one
    3b-confidence  destroying sample-wise confidences (global_confidence) costs the student robustness
    3b-order       destroying the incorrect-class order (shuffle_nonmax) costs the student robustness

A finding whose models (or robust results) are missing from every seed is left out. `NEEDS` says which
models each finding compares; only the 3s (`ROBUST_IDS`) read robust results, 1 and 2 read clean logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Collection, Mapping, Sequence

import numpy as np
import pandas as pd

from core.engine import analysis, stats

STANDARD, AT = "standard", "pgd-at"  # the recipe names of the two teachers (core.study.recipes)
CLEAN = "none: clean test images"
SINGLE_SEED_THRESHOLD = 0.9  # finding 2 with one seed: "well below 1" means the interval's top is under it


def student(teacher: str, manipulation: str) -> str:
    """The recipe name of a student (as `core.study.recipes.student_recipe` names it)."""
    return f"student:{teacher}:{manipulation}"


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


@dataclass(frozen=True, eq=False)
class ModelResult:
    """One model, one seed: clean logits (N, K), labels (N,), and per-image correctness (N,) bool under
    the reliable attack at the findings' eps (None if it was not evaluated)."""

    logits: np.ndarray
    labels: np.ndarray
    robust_correct: np.ndarray | None = None

    def __post_init__(self):
        z, y = _np(self.logits), _np(self.labels).astype(np.int64)
        if z.ndim != 2 or y.shape != (len(z),):
            raise ValueError(f"ModelResult needs logits (N, K) and labels (N,), got {z.shape} and {y.shape}")
        object.__setattr__(self, "logits", z)
        object.__setattr__(self, "labels", y)
        if self.robust_correct is not None:
            ok = _np(self.robust_correct).astype(bool)
            if ok.shape != y.shape:
                raise ValueError(f"robust_correct has shape {ok.shape}, expected {y.shape}")
            object.__setattr__(self, "robust_correct", ok)

    @classmethod
    def from_logits(cls, clean_logits, labels, attacked_logits=None) -> "ModelResult":
        """From clean logits (N, K), labels (N,) and the logits (N, K) of the attacked images (numpy or torch)."""
        correct = None if attacked_logits is None else _np(attacked_logits).argmax(axis=1) == _np(labels)
        return cls(clean_logits, labels, correct)

    @classmethod
    def from_records(cls, clean, attacked=None) -> "ModelResult":
        """From two `core.engine.logits.LogitsRecord`s (or anything with .logits and .labels) of one model."""
        if attacked is not None and not np.array_equal(_np(attacked.labels), _np(clean.labels)):
            raise ValueError("the clean and attacked records hold different test images")
        return cls.from_logits(clean.logits, clean.labels, None if attacked is None else attacked.logits)

    @cached_property
    def table(self) -> pd.DataFrame:
        """Per-image statistics of the clean logits (`analysis.per_sample`)."""
        return analysis.per_sample(self.logits, self.labels)


@dataclass(frozen=True)
class Finding:
    """A claim, its verdict, and the effect with its interval (`quantity` says what the effect measures)."""

    id: str
    claim: str
    verdict: str
    effect: float
    interval: tuple[float, float]
    n_seeds: int
    attack: str            # the attack that made the numbers ("none: clean test images" for clean statistics)
    quantity: str = ""
    n_images: int = 0      # per-image values per model, summed over seeds
    level: float = 0.95
    null: float = 0.0      # the value the interval is compared with
    note: str = ""
    details: dict = field(default_factory=dict, hash=False, compare=False)  # name -> Interval.to_dict() + verdict
    provisional: bool = False  # robust accuracy from a weaker attack (an upper bound) while the reliable one is missing

    def to_dict(self) -> dict:
        """The finding as JSON (a report's findings are never provisional: the key appears only on one that is)."""
        return {"id": self.id, "claim": self.claim, "verdict": self.verdict, "effect": self.effect,
                "interval": list(self.interval), "n_seeds": self.n_seeds, "attack": self.attack,
                "quantity": self.quantity, "n_images": self.n_images, "level": self.level, "null": self.null,
                "note": self.note, "details": self.details, **({"provisional": True} if self.provisional else {})}


def _finding(fid: str, claim: str, quantity: str, iv: stats.Interval, direction: int, attack: str,
             null: float = 0.0, verdict: str | None = None, note: str = "", details: dict | None = None) -> Finding:
    return Finding(fid, claim, verdict or stats.verdict(iv, direction, null=null), iv.estimate, (iv.lo, iv.hi),
                   iv.n_seeds, attack, quantity, iv.n, iv.level, null, note, details or {})


def _detail(iv: stats.Interval, direction: int, null: float = 0.0) -> dict:
    return {**iv.to_dict(), "verdict": stats.verdict(iv, direction, null=null)}


def _seeds(per_seed: Sequence[Mapping[str, ModelResult]], *names: str, robust: bool = False):
    """The seeds holding every model of `names` (with robust results if asked), as tuples of results."""
    return [tuple(m[n] for n in names) for m in per_seed
            if all(n in m and (not robust or m[n].robust_correct is not None) for n in names)]


def finding_logits(per_seed, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Finding | None:
    """1: PGD-AT minus standard, mean max logit and mean logit gap on clean images; both must hold."""
    pairs = _seeds(per_seed, AT, STANDARD)
    if not pairs:
        return None
    data = [tuple(m.table[c].to_numpy() for c in ("max_logit", "logit_gap") for m in (at, st)) for at, st in pairs]
    top, gap = stats.joint_intervals(  # (max AT, max standard, gap AT, gap standard) per seed
        data, lambda a, b, c, d: np.stack([a.mean(1) - b.mean(1), c.mean(1) - d.mean(1)], axis=1), n_boot, level, seed)
    parts = {"max logit": stats.verdict(top, -1), "logit gap": stats.verdict(gap, -1)}
    unresolved = [v for v in parts.values() if v != "holds"]
    verdict = "reversed" if "reversed" in unresolved else unresolved[0] if unresolved else "holds"
    note = "; ".join(f"the {k}: {v}" for k, v in parts.items()) if unresolved else ""
    return _finding("1", "Adversarial training shrinks the logits: on clean test images the PGD-AT model's max "
                    "logit and its logit gap (max minus second) are smaller than the standard model's.",
                    "mean max logit, PGD-AT minus standard", top, -1, CLEAN, verdict=verdict, note=note,
                    details={"max_logit": _detail(top, -1), "logit_gap": _detail(gap, -1)})


def _spearman_and_baseline(at: np.ndarray, std: np.ndarray, other: np.ndarray) -> np.ndarray:
    """(m, n) x 3 -> (m, 3): Spearman(at, std) - Spearman(std, other), and both terms."""
    r = stats.average_ranks(std)
    cross, base = stats.pearson(stats.average_ranks(at), r), stats.pearson(r, stats.average_ranks(other))
    return np.stack([cross - base, cross, base], axis=1)


def finding_confidence_order(per_seed, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> Finding | None:
    """2: Spearman of PGD-AT and standard clean confidences, against two standard models' (seed-to-seed)
    agreement when 2+ seeds hold both, else against SINGLE_SEED_THRESHOLD."""
    pairs = _seeds(per_seed, AT, STANDARD)
    if not pairs:
        return None
    conf = [(stats.dense_ranks(at.table.confidence.to_numpy()), stats.dense_ranks(st.table.confidence.to_numpy()))
            for at, st in pairs]
    claim = "Adversarial and standard training disagree on which test images are confident: "
    if len(pairs) == 1:
        iv = stats.paired_statistic([conf[0][0]], [conf[0][1]], stats.spearman, n_boot, level, seed)
        return _finding("2", claim + f"the Spearman correlation of their clean confidences is well below 1 (under "
                        f"{SINGLE_SEED_THRESHOLD:g}; one seed gives no seed-to-seed baseline, so this fixed "
                        "threshold is the baseline).", "Spearman of PGD-AT and standard clean confidences", iv, -1,
                        CLEAN, null=SINGLE_SEED_THRESHOLD)
    labels = [st.labels for _, st in pairs]
    if any(len(y) != len(labels[0]) or not np.array_equal(y, labels[0]) for y in labels):
        raise ValueError("finding 2 compares models of different seeds image by image: every seed must be "
                         "evaluated on the same test images")
    # Unit s: (AT_s, standard_s) against (standard_s, standard_{s+1}): same images, resampled jointly. AT_s and
    # standard_s share their initial weights (same seed), which if anything raises their agreement: conservative.
    data = [(conf[s][0], conf[s][1], conf[(s + 1) % len(conf)][1]) for s in range(len(conf))]
    diff, cross, base = stats.joint_intervals(data, _spearman_and_baseline, n_boot, level, seed)
    return _finding("2", claim + "the Spearman correlation of their clean confidences is lower than that of two "
                    "standard models trained with different seeds (the seed-to-seed baseline).",
                    "Spearman(PGD-AT, standard) minus Spearman(standard, standard of another seed), clean confidences",
                    diff, -1, CLEAN, details={"cross_method": cross.to_dict(), "seed_to_seed": base.to_dict()})


ROBUSTNESS = (  # id, the better model, the worse, the claim, what the difference is
    ("3a", student(AT, "none"), student(STANDARD, "none"),
     "A student distilled on clean images from the PGD-AT teacher is more robust than one distilled from the "
     "standard teacher: it inherits some of its teacher's robustness.",
     "student of PGD-AT minus student of standard"),
    ("3b-confidence", student(AT, "none"), student(AT, "global_confidence"),
     "The teacher's sample-wise confidences carry robustness: a student whose teacher's confidences were all "
     "set to the dataset's mean (global_confidence) is less robust.",
     "student of PGD-AT minus global-confidence student"),
    ("3b-order", student(AT, "none"), student(AT, "shuffle_nonmax"),
     "The order of the teacher's incorrect classes carries robustness: a student whose teacher's non-max "
     "logits were shuffled among the incorrect classes (shuffle_nonmax) is less robust.",
     "student of PGD-AT minus shuffled-order student"),
)
ROBUST_IDS = tuple(fid for fid, *_ in ROBUSTNESS)  # the findings that read robust results (1 and 2: clean logits)
NEEDS: dict[str, tuple[str, ...]] = {  # finding id -> the models it compares
    "1": (AT, STANDARD), "2": (AT, STANDARD), **{fid: (better, worse) for fid, better, worse, *_ in ROBUSTNESS}}
FINDING_MODELS = tuple(dict.fromkeys(n for names in NEEDS.values() for n in names))
# the models whose robust results the 3s read, in the order that completes 3a first, then 3b-confidence, 3b-order
ROBUST_MODELS = tuple(dict.fromkeys(n for fid in ROBUST_IDS for n in NEEDS[fid]))


def finding_robustness(fid: str, better: str, worse: str, claim: str, what: str, per_seed, eps: float,
                       attack_label: str, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Finding | None:
    """Robust accuracy of `better` minus `worse` at eps, paired by seed and image; claimed positive."""
    pairs = _seeds(per_seed, better, worse, robust=True)
    if not pairs:
        return None
    iv = stats.paired_difference([b.robust_correct for b, _ in pairs], [w.robust_correct for _, w in pairs],
                                 np.mean, n_boot, level, seed)
    return _finding(fid, claim, f"{what}, robust accuracy at eps {eps:g}", iv, +1, attack_label)


def compute_findings(per_seed: Sequence[Mapping[str, ModelResult]], eps: float, attack_label: str,
                     n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                     ids: Collection[str] | None = None) -> list[Finding]:
    """Findings 1, 2, 3a, 3b-confidence and 3b-order (or those of `ids`), those whose models are present.

    per_seed[s] maps recipe names ("standard", "pgd-at", "student:pgd-at:none", ...) to the results of
    seed s; robust_correct must come from `attack_label`'s attack at `eps`. Spearman bootstraps use
    n_boot // 2 resamples (they cost more and their intervals are wider than the resolution needed).
    """
    def wanted(fid: str) -> bool:
        return ids is None or fid in ids

    out = [finding_logits(per_seed, n_boot, level, seed) if wanted("1") else None,
           finding_confidence_order(per_seed, max(200, n_boot // 2), level, seed) if wanted("2") else None]
    out += [finding_robustness(*spec, per_seed, eps, attack_label, n_boot, level, seed) for spec in ROBUSTNESS
            if wanted(spec[0])]
    return [f for f in out if f is not None]


def format_findings(findings: Sequence[Finding]) -> list[str]:
    """One line per finding for the command line (plus indented lines for its parts and notes)."""
    lines = []
    for f in findings:
        against = f" (compared with {f.null:g})" if f.null else ""
        verdict = f"{f.verdict} (provisional)" if f.provisional else f.verdict
        lines.append(f"{f.id:<14} {verdict}: {f.quantity} ({f.attack}): "
                     f"{f.effect:+.3f} [{f.interval[0]:+.3f}, {f.interval[1]:+.3f}]{against}")
        for name, d in f.details.items():
            lo, hi = d["interval"]
            tail = f" {d['verdict']}" if "verdict" in d else ""
            lines.append(f"{'':<15}{name.replace('_', ' ')}: {d['estimate']:+.3f} [{lo:+.3f}, {hi:+.3f}]{tail}")
        if f.note:
            lines.append(f"{'':<15}{f.note}")
    return lines
