"""How models are named and coloured on screen: one readable name and one colour per model, everywhere.

Internal keys (`student:pgd-at:shuffle_nonmax`, `lab:pgd-at:none T=2`) stay in the cache, the URL and
the CSV files; people read `display_name`. Colours come from `assign` over the session's whole catalog
(the sidebar's model list, lab runs included), so a model has the same colour on every chart and page,
whatever else a chart shows: the default study's models have fixed colours, the others take the next
free ones in catalog order.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

# the first ten are the default study's (in the order of FIXED), the next ten go to other models first
PALETTE = ("#4c78a8", "#e45756", "#54a24b", "#f58518", "#b279a2", "#72b7b2", "#9d755d", "#eeca3b",
           "#ff9da6", "#bab0ac", "#17becf", "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39",
           "#7b4173", "#3182bd", "#e6550d", "#31a354")
FIXED = ("standard", "pgd-at", "trades", "student:pgd-at:none", "student:pgd-at:shuffle_nonmax",
         "student:pgd-at:flatten_nonmax", "student:pgd-at:resample_nonmax", "student:pgd-at:global_confidence",
         "student:pgd-at:hard_labels", "student:standard:none")
METHODS = {"standard": "Standard", "pgd-at": "PGD-AT", "trades": "TRADES"}
OTHERS = {"adversarial": "Adversarially trained"}  # the Why page's toy model
MANIPULATION_NAMES = {"none": "untouched", "shuffle_nonmax": "non-max shuffled", "flatten_nonmax": "non-max flattened",
                      "resample_nonmax": "non-max resampled", "global_confidence": "one global confidence",
                      "hard_labels": "hard labels"}


SWEPT = re.compile(r"(standard|pgd-at|trades|fast-at)(?:-eps([0-9.e+-]+?))?-s(\d+)(?:-(\w+))?")  # core.study.sweep's
SWEPT_METHODS = {**METHODS, "fast-at": "Fast-AT"}


def _swept_parts(name: str) -> tuple[str, str] | None:
    """("PGD-AT", "eps 0.1, seed 1") of a swept model's name ("pgd-at-eps0.1-s1"); None if it is not one."""
    m = SWEPT.fullmatch(name)
    if m is None or (m.group(1) == "standard") != (m.group(2) is None):
        return None
    settings = ([f"eps {m.group(2)}"] if m.group(2) else []) + [f"seed {m.group(3)}"] + \
        ([m.group(4)] if m.group(4) else [])
    return SWEPT_METHODS[m.group(1)], ", ".join(settings)


def _swept(name: str) -> str | None:
    """A swept model's name for people: "pgd-at-eps0.1-s1" -> "PGD-AT (eps 0.1, seed 1)"; None if not one."""
    parts = _swept_parts(name)
    return None if parts is None else f"{parts[0]} ({parts[1]})"


def _teacher(name: str) -> str:
    return METHODS.get(name) or _swept(name) or name


def display_name(name: str) -> str:
    """A model's name for people: 'PGD-AT', 'Student of PGD-AT (non-max shuffled)', 'Lab: student of ...'.

    Swept models (`core.study.sweep`): 'PGD-AT (eps 0.1, seed 1)', 'Student of PGD-AT (eps 0.1, seed 1; untouched)'.
    Names the app does not know (zoo models, own names) are shown as they are.
    """
    if name in METHODS or name in OTHERS:
        return METHODS.get(name) or OTHERS[name]
    if (swept := _swept(name)) is not None:
        return swept
    head, _, rest = name.partition(" ")
    settings = re.match(r"((?:[\w.-]+=\S+(?: |$))*)(.*)", rest)  # "T=2 epochs=5", then any other text
    extra = "".join(f", {t}" for t in settings.group(1).split()) + (f" {settings.group(2)}" if settings.group(2) else "")
    kind, _, rest = head.partition(":")
    teacher, _, manipulation = rest.partition(":")
    if kind not in ("student", "lab") or not teacher or not manipulation:
        return name
    how, swept = MANIPULATION_NAMES.get(manipulation, manipulation), _swept_parts(teacher)
    if manipulation == "hard_labels":
        what = "student on hard labels" + (f" (teacher {swept[0]}, {swept[1]})" if swept else "")
    elif swept:  # "PGD-AT (eps 0.1, seed 1; untouched)": the manipulation joins the teacher's brackets
        what = f"student of {swept[0]} ({swept[1]}; {how})"
    else:
        what = f"student of {_teacher(teacher)} ({how})"
    return ("Lab: " + what if kind == "lab" else what[0].upper() + what[1:]) + extra


def assign(catalog: Sequence[str]) -> dict[str, str]:
    """A colour per model of the catalog: the default study's fixed, the others the next free, in order."""
    out = {n: PALETTE[FIXED.index(n)] for n in catalog if n in FIXED}
    reserved = {PALETTE[i] for i in range(len(FIXED))}  # kept for the default study even when it is not listed
    free = [c for c in PALETTE if c not in reserved] + [c for c in PALETTE if c in reserved and c not in out.values()]
    for i, n in enumerate(n for n in dict.fromkeys(catalog) if n not in out):
        out[n] = free[i % len(free)]
    return out


def colors_for(models: Sequence[str], colors: Mapping[str, str] | None = None) -> list[str]:
    """The colours of `models`, from the session's assignment where it has them (else a fresh one)."""
    fresh = assign(list(models))
    return [(colors or {}).get(m) or fresh[m] for m in models]
