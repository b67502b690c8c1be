"""Checkpoint selection rules and the out-of-distribution early warning."""

import pytest
from pydantic import ValidationError

from evaluation.selection import (
    EarlyWarningConfig,
    SelectionConfig,
    ValidationPoint,
    choices_by_rule,
    ood_early_warning,
    select_checkpoint,
)
from shared.errors import UserError

# ID climbs all along; OOD peaks at step 200 and then slides (the paper's GRPO pattern).
HISTORY = [
    ValidationPoint(step=300, id_macro_f1=0.36, ood_macro_f1=0.26),
    ValidationPoint(step=100, id_macro_f1=0.30, ood_macro_f1=0.30),
    ValidationPoint(step=200, id_macro_f1=0.33, ood_macro_f1=0.32),
    ValidationPoint(step=400, id_macro_f1=0.38, ood_macro_f1=0.24),
]


def test_each_rule_picks_its_best_step():
    choices = choices_by_rule(HISTORY, ood_weight=0.5)
    assert choices["in_distribution"].step == 400
    assert choices["out_of_distribution"].step == 200
    assert choices["weighted"].step == 200  # 0.325 beats 0.310 (step 400) and 0.310 (step 300)
    assert select_checkpoint(HISTORY, SelectionConfig(rule="weighted", ood_weight=0.0)).step == 400
    assert select_checkpoint(HISTORY, SelectionConfig(rule="weighted", ood_weight=1.0)).step == 200


def test_ties_go_to_the_earliest_step_and_empty_history_is_an_error():
    tied = [ValidationPoint(step=s, id_macro_f1=0.5, ood_macro_f1=0.4) for s in (30, 10, 20)]
    assert select_checkpoint(tied, SelectionConfig()).step == 10
    with pytest.raises(UserError):
        select_checkpoint([], SelectionConfig())
    with pytest.raises(ValidationError):
        SelectionConfig(rule="weighted", ood_weight=1.5)


def test_early_warning_when_ood_slides_while_id_rises():
    message = ood_early_warning(HISTORY, EarlyWarningConfig(max_ood_drop=0.2))
    assert message is not None
    assert "step 400" in message and "25%" in message and "step 200" in message
    assert ood_early_warning(HISTORY, EarlyWarningConfig(max_ood_drop=0.3)) is None  # 25% < 30%
    assert ood_early_warning(HISTORY[1:3], EarlyWarningConfig()) is None  # OOD still at its best


def test_no_warning_when_id_fell_too():
    both_fall = [
        ValidationPoint(step=1, id_macro_f1=0.4, ood_macro_f1=0.3),
        ValidationPoint(step=2, id_macro_f1=0.3, ood_macro_f1=0.1),
    ]
    assert ood_early_warning(both_fall, EarlyWarningConfig(max_ood_drop=0.1)) is None
    assert ood_early_warning([], EarlyWarningConfig()) is None
