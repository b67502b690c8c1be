"""The nuanced reward's collapse guard as the paper states it: "cumulative penalties (−30 per excess
repetition, −50 for mode collapse) when any single label exceeds 70% dominance" in a window of the
last 100 predictions. Every expected value is computed by hand in the comment beside it.

Reading used (rewards/nuanced.py): with window W and threshold 0.7, a label dominates once more than
⌊0.7·W⌋ predictions of the window hold it; each of those beyond ⌊0.7·W⌋ is one excess repetition.
An answer holding a dominant label pays −30 per excess repetition of each dominant label it holds,
and −50 once. Empty slots of a window not yet full hold no label.
"""

import pytest

from rewards.nuanced import NuancedReward
from shared.schemas import RewardItem

CM, ED, LO, NF, SD = "Cardiomegaly", "Edema", "Lung Opacity", "No Finding", "Support Devices"


def answer(solution: str, truth: list[str]) -> RewardItem:
    return RewardItem(text=f"<think>x</think>\n<solution>{solution}</solution>", labels=truth, n_tokens=300)


def totals(reward: NuancedReward, items: list[RewardItem], state=None) -> tuple[list[float], dict]:
    scored, state = reward.score(items, state)
    assert all(s.total == pytest.approx(sum(s.components.values())) for s in scored)
    return [s.total for s in scored], state


def test_guard_acts_before_the_window_is_full() -> None:
    # Window 100, allowance ⌊0.7·100⌋ = 70. 71 exact "No Finding" answers from an empty window:
    # answers 1-70 hold No Finding in ≤ 70 predictions: 100 each. Answer 71: 71 > 70, one excess
    # repetition: 100 - 30 - 50 = 20 (the window holds 71 of 100 slots: the guard does not wait).
    scored, _ = NuancedReward().score([answer("No Finding", [NF])] * 71, None)
    assert [s.total for s in scored[:70]] == [100.0] * 70
    assert scored[70].components["repetition"] == -30.0
    assert scored[70].components["collapse"] == -50.0
    assert scored[70].total == 20.0


def test_penalties_accumulate_per_excess_repetition() -> None:
    reward = NuancedReward({"window_size": 10})  # allowance ⌊0.7·10⌋ = 7
    got, state = totals(reward, [answer("No Finding", [NF])] * 11)
    # 1-7: ≤ 7 No Finding, 100. 8: excess 1: 100-30-50 = 20. 9: excess 2: 100-60-50 = -10.
    # 10: excess 3: 100-90-50 = -40. 11: the window stays 10 of 10: -40 again.
    assert got == [100.0] * 7 + [20.0, -10.0, -40.0, -40.0]
    # An answer without the dominant label is what the guard wants: Edema holds 1 slot, 100.
    # Window now 9 NF + ED; the next No Finding pushes out the oldest NF: 9 NF, excess 2 -> -10.
    got, _ = totals(reward, [answer("Edema", [ED]), answer("No Finding", [NF])], state)
    assert got == [100.0, -10.0]


def test_one_dominant_label_is_mode_collapse_even_when_the_answers_differ() -> None:
    reward = NuancedReward({"window_size": 10})
    pairs = [("Support Devices, Lung Opacity", [SD, LO]), ("Support Devices, Edema", [SD, ED])] * 5
    scored, _ = reward.score([answer(text, truth) for text, truth in pairs], None)
    # Answer 8: Support Devices in 8 of 10 slots (> 7): excess 1; Lung Opacity 4, Edema 4: none.
    # The whole answer "Support Devices, Edema" is only 4 of 8: still mode collapse. 100-30-50 = 20.
    assert scored[7].components == pytest.approx(
        {**scored[7].components, "repetition": -30.0, "collapse": -50.0}
    )
    assert scored[7].total == 20.0
    # Answer 10: Support Devices 10 of 10, excess 3: 100 - 90 - 50 = -40.
    assert scored[9].total == -40.0


def test_two_dominant_labels_in_one_answer() -> None:
    reward = NuancedReward({"window_size": 10})
    scored, _ = reward.score([answer("Support Devices, Lung Opacity", [SD, LO])] * 8, None)
    # Answer 8: both labels in 8 of 10 slots: excess 1 each, -30·2; collapse counted once: -50.
    # 100 - 60 - 50 = -10.
    assert scored[7].components["repetition"] == -60.0 and scored[7].components["collapse"] == -50.0
    assert scored[7].total == -10.0


def test_threshold_is_strictly_more_than_70_percent() -> None:
    reward = NuancedReward({"window_size": 10})
    window = {"format": 1, "window": [ED] * 3 + [NF] * 6}
    # Pushing No Finding gives 7 of 10: 7 > 7 is false, no penalty: 100.
    got, state = totals(reward, [answer("No Finding", [NF])], window)
    assert got == [100.0]
    # The next No Finding pushes out an Edema: 8 of 10, excess 1: 20.
    got, _ = totals(reward, [answer("No Finding", [NF])], state)
    assert got == [20.0]


def test_wrong_answers_enter_the_window_too() -> None:
    # The guard watches what the policy says, not whether it is right: 8 "No Finding" answers to
    # Edema X-rays. Each is a false positive (No Finding's cost c) with no credit; the 8th also pays
    # 30 + 50 for the collapse: -(c + 80).
    reward = NuancedReward({"window_size": 10})
    cost = reward.false_positive_cost[NF]
    got, _ = totals(reward, [answer("No Finding", [ED])] * 8)
    assert got[:7] == pytest.approx([-cost] * 7)
    assert got[7] == pytest.approx(-cost - 80.0)


def test_malformed_answers_with_labels_are_predictions() -> None:
    # A policy collapsing onto a malformed answer is still collapsing: the labels read from it enter
    # the window; completions without any label do not.
    reward = NuancedReward({"window_size": 10})
    missing_think = RewardItem(text="<solution>No Finding</solution>", labels=[NF], n_tokens=300)
    _, state = reward.score([missing_think, RewardItem(text="nothing", labels=[NF], n_tokens=3)], None)
    assert state["window"] == [NF]
