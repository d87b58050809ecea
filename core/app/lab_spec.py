"""The distillation lab's specs: what one what-if run is (`LabSpec`), its name, replicates and baselines, and its id.

A spec names a teacher of the default study (seed STUDY_SEED), a manipulation of its non-max logits and the
distillation settings; `core.app.lab` runs it. Split from core.app.lab so that the run's machinery and its
description stay small; core.app.lab re-exports everything here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from core.config import AttackSpec, stable_key
from core.errors import LogitscopeError
from core.study.hyper import hyper
from core.study.recipes import Recipe, student_recipe, teacher_recipes

STUDY_SEED = 0  # the seed of the default study, whose teachers and baselines the lab compares against
MAX_REPLICATES = 5  # students per configuration: each costs a distillation and an AutoAttack run (~10 s on digits)


@dataclass(frozen=True)
class LabSpec:
    """One what-if run: a teacher (by name), a manipulation of its non-max logits, and its settings."""

    dataset: str = "digits"
    teacher: str = "pgd-at"
    manipulation: str = "none"
    temperature: float = 4.0
    hard_weight: float = 0.0
    fraction: float = 1.0
    epochs: int = 20
    seed: int = 0
    replicates: int = 1  # students with seeds seed .. seed + replicates - 1

    def teacher_recipe(self) -> Recipe:
        """The study's teacher (study seed 0): `seed` is the student's, the teacher stays the same."""
        teachers = {r.name: r for r in teacher_recipes(self.dataset, STUDY_SEED)}
        if self.teacher not in teachers:
            raise LogitscopeError(f"Unknown teacher {self.teacher!r}: choose one of {', '.join(teachers)}.")
        return teachers[self.teacher]

    def recipe(self) -> Recipe:
        """The student's recipe (of the first replicate), named after the settings that differ from the defaults."""
        if not 1 <= int(self.epochs) <= 200:
            raise LogitscopeError(f"epochs must be between 1 and 200 in the lab, got {self.epochs}.")
        r = student_recipe(self.teacher_recipe(), self.manipulation, self.temperature, self.hard_weight,
                           self.fraction, int(self.epochs), self.seed)
        return replace(r, name=self.name())

    def replicas(self) -> list["LabSpec"]:
        """One spec per replicate, seeds seed .. seed + replicates - 1 (each its own recipe and checkpoint)."""
        if not 1 <= int(self.replicates) <= MAX_REPLICATES:
            raise LogitscopeError(f"replicates must be between 1 and {MAX_REPLICATES}, got {self.replicates}.")
        return [replace(self, seed=int(self.seed) + i, replicates=1) for i in range(int(self.replicates))]

    def baseline_specs(self) -> dict[str, "LabSpec"]:
        """The baselines' specs by role (`BASELINES`): this run's settings, nothing manipulated."""
        plain = replace(self, manipulation="none", fraction=1.0)
        return {"untouched": plain, "standard": replace(plain, teacher="standard")}

    def name(self) -> str:
        h = hyper(self.dataset)
        extra = [f"{k}={v:g}" for k, v, d in (("T", self.temperature, h.temperature), ("hard", self.hard_weight, 0),
                                              ("frac", self.fraction, 1), ("epochs", self.epochs, h.epochs),
                                              ("seed", self.seed, 0)) if v != d]
        return " ".join([f"lab:{self.teacher}:{self.manipulation}", *extra])


def default_spec(dataset: str = "digits") -> LabSpec:
    h = hyper(dataset)
    return LabSpec(dataset=dataset, temperature=h.temperature, epochs=h.epochs)



def run_id(spec: LabSpec, attack: AttackSpec) -> str:
    """A run is a spec evaluated under an attack: the same pair replaces its earlier row. (One replicate
    leaves the spec's `replicates` out, so a run recorded before replicates keeps its id.)"""
    s = asdict(spec)
    if s["replicates"] == 1:
        del s["replicates"]
    return stable_key({"lab": s, "attack": attack.key()})
