"""Choosing a checkpoint from training-time evaluations, and warning when out-of-distribution
performance falls below where SFT left it while in-distribution performance holds (the paper:
"the SFT checkpoint uniquely improves on NIH ... GRPO ... 19% degradation relative to the SFT
checkpoint").

Every evaluated step is scored on the same images (the seeded selection subsets), so two steps are
compared by a paired bootstrap: both are rescored on the same resamples of the images, and a
difference counts only when its interval excludes 0. On 64 images a 0.01 macro-F1 gap is noise.

Selection: a rule gives each step a score (ID macro-F1, OOD macro-F1, or their weighted mean). The
step with the best score is found; every step whose paired difference to it is not significantly
below zero is tied with it. Tie rule: among the tied steps, the earliest is chosen: it has had the
fewest GRPO updates, so it has drifted least from the SFT checkpoint, which the paper found to
transfer best out of distribution. The best raw step and the tied steps are reported beside it.

Early warning: at a step after the first, the OOD macro-F1 is significantly below its value at the
first evaluated step (step 0, right after SFT) while the ID macro-F1 is not significantly below its
own (it holds or rises): the run is winning the benchmark and losing the patient.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, Field

from evaluation.bootstrap import resampled_macro_f1
from evaluation.metrics import LabelMatrices
from shared.config import StrictModel
from shared.errors import UserError

SelectionRule = Literal["in_distribution", "out_of_distribution", "weighted"]
SELECTION_RULES: tuple[SelectionRule, ...] = ("in_distribution", "out_of_distribution", "weighted")
TIE_RULE = "earliest of the steps not significantly below the best (paired bootstrap)"


class ValidationPoint(BaseModel):
    """One training-time evaluation of a checkpoint, as numbers."""

    step: int
    id_macro_f1: float
    ood_macro_f1: float | None = None


@dataclass(frozen=True)
class StepEvaluation:
    """A step's answers on the selection sets, as label matrices whose rows are the same images in
    the same order at every step."""

    step: int
    in_distribution: LabelMatrices
    out_of_distribution: LabelMatrices | None = None


class SelectionConfig(StrictModel):
    rule: SelectionRule = "in_distribution"
    ood_weight: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="`weighted` scores (1 - ood_weight) * ID macro-F1 + ood_weight * OOD macro-F1",
    )
    level: Annotated[float, Field(gt=0.5, lt=1.0)] = 0.95
    n_resamples: Annotated[int, Field(ge=100)] = 1000
    seed: int = 0


class StepChoice(BaseModel):
    """What one rule chose, and why."""

    rule: SelectionRule
    step: int  # the chosen step
    score: float
    best_step: int  # the step with the best raw score
    best_score: float
    tied_steps: list[int]  # not significantly below the best (the best included), in step order
    tie_rule: str = TIE_RULE


def _check_history(history: Sequence[StepEvaluation]) -> list[StepEvaluation]:
    if not history:
        raise UserError("checkpoint selection needs at least one evaluated step")
    ordered = sorted(history, key=lambda evaluation: evaluation.step)
    steps = [evaluation.step for evaluation in ordered]
    if len(set(steps)) != len(steps):
        raise UserError(f"step(s) evaluated twice: {sorted({s for s in steps if steps.count(s) > 1})}")
    for role in ("in_distribution", "out_of_distribution"):
        sizes = {getattr(e, role).n_scored for e in ordered if getattr(e, role) is not None}
        if len(sizes) > 1:
            raise UserError(
                f"{role} selection set: the steps were scored on different images {sorted(sizes)}"
            )
    return ordered


def rule_scores(
    history: Sequence[StepEvaluation], config: SelectionConfig
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(steps, score of each step, resampled scores: steps x resamples), the same resamples for
    every step. The ID and OOD sets are resampled independently of each other."""
    ordered = _check_history(history)
    steps = [evaluation.step for evaluation in ordered]
    needs_ood = config.rule == "out_of_distribution" or (config.rule == "weighted" and config.ood_weight > 0)
    if needs_ood and any(evaluation.out_of_distribution is None for evaluation in ordered):
        raise UserError(f"selection rule {config.rule!r} needs an out-of-distribution selection set")
    parts: list[tuple[float, list[LabelMatrices], int]] = []
    if config.rule == "in_distribution":
        parts.append((1.0, [e.in_distribution for e in ordered], config.seed))
    elif config.rule == "out_of_distribution":
        parts.append((1.0, [e.out_of_distribution for e in ordered], config.seed + 1))
    else:
        parts.append((1 - config.ood_weight, [e.in_distribution for e in ordered], config.seed))
        if config.ood_weight > 0:
            parts.append((config.ood_weight, [e.out_of_distribution for e in ordered], config.seed + 1))
    points = np.zeros(len(ordered))
    samples = np.zeros((len(ordered), config.n_resamples))
    for weight, matrices, seed in parts:
        point, resampled = resampled_macro_f1(matrices, config.n_resamples, seed)
        points += weight * point
        samples += weight * resampled
    return steps, points, samples


def _upper_bound(differences: np.ndarray, level: float) -> float:
    return float(np.percentile(differences, 100 * (1 - (1 - level) / 2)))


def select_checkpoint(history: Sequence[StepEvaluation], config: SelectionConfig) -> StepChoice:
    """The earliest step not significantly below the best under the rule (see the module's text)."""
    steps, points, samples = rule_scores(history, config)
    best = int(np.argmax(points))  # argmax keeps the first of equal scores: the earliest
    tied = [
        index
        for index in range(len(steps))
        if index == best or _upper_bound(samples[index] - samples[best], config.level) >= 0
    ]
    chosen = tied[0]
    return StepChoice(
        rule=config.rule,
        step=steps[chosen],
        score=float(points[chosen]),
        best_step=steps[best],
        best_score=float(points[best]),
        tied_steps=[steps[index] for index in tied],
    )


def choices_by_rule(history: Sequence[StepEvaluation], config: SelectionConfig) -> dict[str, StepChoice]:
    """What each rule would have chosen, to report side by side (the OOD rules only when every step
    has an OOD selection set)."""
    has_ood = all(evaluation.out_of_distribution is not None for evaluation in history)
    rules = SELECTION_RULES if has_ood else ("in_distribution",)
    return {rule: select_checkpoint(history, config.model_copy(update={"rule": rule})) for rule in rules}


@dataclass(frozen=True)
class PairedChange:
    """Macro-F1 of a later step minus a reference step on the same images, with its interval."""

    reference: float
    latest: float
    low: float
    high: float

    @property
    def difference(self) -> float:
        return self.latest - self.reference


def paired_change(
    reference: LabelMatrices, latest: LabelMatrices, level: float, n_resamples: int, seed: int
) -> PairedChange:
    points, samples = resampled_macro_f1([reference, latest], n_resamples, seed)
    differences = samples[1] - samples[0]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(differences, [tail, 100 - tail])
    return PairedChange(float(points[0]), float(points[1]), float(low), float(high))


def ood_early_warning(history: Sequence[StepEvaluation], config: SelectionConfig) -> str | None:
    """A message when the latest step's OOD macro-F1 is significantly below the first evaluated
    step's (post-SFT) while its ID macro-F1 is not significantly below the first step's."""
    ordered = sorted(history, key=lambda evaluation: evaluation.step)
    if len(ordered) < 2 or any(evaluation.out_of_distribution is None for evaluation in ordered):
        return None
    first, latest = _check_history(ordered)[0], ordered[-1]
    ood = paired_change(
        first.out_of_distribution,
        latest.out_of_distribution,
        config.level,
        config.n_resamples,
        config.seed + 1,
    )
    identical = paired_change(
        first.in_distribution, latest.in_distribution, config.level, config.n_resamples, config.seed
    )
    if ood.high >= 0 or identical.high < 0:
        return None
    since = "post-SFT" if first.step == 0 else f"step-{first.step}"
    movement = "rises" if identical.difference > 0 else "holds"
    return (
        f"step {latest.step}: OOD macro-F1 {ood.latest:.3f} is significantly below its {since} value "
        f"{ood.reference:.3f} ({ood.difference:+.3f}, {config.level:.0%} CI [{ood.low:+.3f}, {ood.high:+.3f}], "
        f"paired bootstrap on the same {latest.out_of_distribution.n_scored} images) while ID macro-F1 "
        f"{movement} ({identical.reference:.3f} -> {identical.latest:.3f}, CI of the change "
        f"[{identical.low:+.3f}, {identical.high:+.3f}])"
    )
