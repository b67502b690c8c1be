"""Choosing a checkpoint from training-time evaluations, and warning when out-of-distribution
performance slides while in-distribution performance still climbs (the paper's finding: GRPO gained
on CheXpert while losing on NIH)."""

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import UserError

SelectionRule = Literal["in_distribution", "out_of_distribution", "weighted"]
SELECTION_RULES: tuple[SelectionRule, ...] = ("in_distribution", "out_of_distribution", "weighted")


class ValidationPoint(BaseModel):
    """One training-time evaluation of a checkpoint."""

    step: int
    id_macro_f1: float
    ood_macro_f1: float


class SelectionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule: SelectionRule = "in_distribution"
    # `weighted` scores (1 - ood_weight) * ID macro-F1 + ood_weight * OOD macro-F1.
    ood_weight: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5


class EarlyWarningConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Warn when OOD macro-F1 is this fraction below its best so far while ID macro-F1 has risen.
    max_ood_drop: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1


def selection_score(point: ValidationPoint, config: SelectionConfig) -> float:
    if config.rule == "in_distribution":
        return point.id_macro_f1
    if config.rule == "out_of_distribution":
        return point.ood_macro_f1
    return (1 - config.ood_weight) * point.id_macro_f1 + config.ood_weight * point.ood_macro_f1


def select_checkpoint(history: Sequence[ValidationPoint], config: SelectionConfig) -> ValidationPoint:
    """The best point under the rule; on a tie the earliest step, the one with less drift from SFT."""
    if not history:
        raise UserError("checkpoint selection needs at least one evaluated step")
    ordered = sorted(history, key=lambda point: point.step)
    return max(ordered, key=lambda point: selection_score(point, config))  # max keeps the first of ties


def choices_by_rule(
    history: Sequence[ValidationPoint], ood_weight: float = 0.5
) -> dict[str, ValidationPoint]:
    """What each rule would have chosen, to report side by side."""
    return {
        rule: select_checkpoint(history, SelectionConfig(rule=rule, ood_weight=ood_weight))
        for rule in SELECTION_RULES
    }


def ood_early_warning(history: Sequence[ValidationPoint], config: EarlyWarningConfig) -> str | None:
    """A message when the latest OOD macro-F1 fell more than `max_ood_drop` (relative) below its best
    so far while the latest ID macro-F1 stands above its value at that best step; otherwise None."""
    if not history:
        return None
    ordered = sorted(history, key=lambda point: point.step)
    latest = ordered[-1]
    best = max(ordered, key=lambda point: point.ood_macro_f1)
    if best.ood_macro_f1 <= 0:
        return None
    drop = (best.ood_macro_f1 - latest.ood_macro_f1) / best.ood_macro_f1
    if drop > config.max_ood_drop and latest.id_macro_f1 > best.id_macro_f1:
        return (
            f"step {latest.step}: out-of-distribution macro-F1 {latest.ood_macro_f1:.3f} is {drop:.0%} below its "
            f"best {best.ood_macro_f1:.3f} (step {best.step}) while in-distribution macro-F1 rose "
            f"{best.id_macro_f1:.3f} -> {latest.id_macro_f1:.3f}"
        )
    return None
