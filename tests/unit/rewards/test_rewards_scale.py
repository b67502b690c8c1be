"""Reward scale under Dr. GRPO: each reward declares a scale, the worker reports it with every
result, and the trainer multiplies the totals by it before taking group advantages (no std
scaling), so the KL coefficient and the gradient clip mean the same under either reward."""

import math

import pytest
from pydantic import ValidationError

from rewards.advantage_scale import mean_abs_advantage, simulated_groups
from rewards.hard import HardReward
from rewards.nuanced import NuancedReward
from rewards.protocol import RewardError, ScoredItem, score_request
from shared.schemas import RewardItem, RewardRequest
from trainer.grpo.stats import StepStats

ITEMS = [
    RewardItem(text="<think>x</think><solution>Edema</solution>", labels=["Edema"], n_tokens=300),
    RewardItem(text="<think>x</think><solution>Cardiomegaly</solution>", labels=["Edema"], n_tokens=300),
]


class Scaled:
    name, version = "scaled", "1"

    def __init__(self, scale):
        self.scale = scale

    def score(self, items, state):
        return [ScoredItem(1.0) for _ in items], None


class Unscaled:
    name, version = "unscaled", "1"

    def score(self, items, state):
        return [ScoredItem(2.0) for _ in items], None


def test_each_reward_declares_a_scale_and_the_result_reports_it() -> None:
    request = RewardRequest(batch_id="b", items=ITEMS)
    assert score_request(HardReward(), request).scale == 1.0
    # The nuanced reward's exact match is worth 100; 1/100 makes it worth what the hard reward's is.
    assert score_request(NuancedReward(), request).scale == 0.01
    assert score_request(NuancedReward({"scale": 0.05}), request).scale == 0.05
    assert score_request(Unscaled(), request).scale == 1.0  # a plugin that declares none
    assert NuancedReward({"scale": 0.05}).version != NuancedReward().version


@pytest.mark.parametrize("scale", [0.0, -1.0, math.nan, math.inf, "big", True])
def test_a_bad_scale_is_a_clear_error(scale) -> None:
    with pytest.raises(RewardError, match="scale"):
        score_request(Scaled(scale), RewardRequest(batch_id="b", items=ITEMS))
    if isinstance(scale, float) and not math.isnan(scale) and not math.isinf(scale):
        with pytest.raises(ValidationError, match="scale"):
            NuancedReward({"scale": scale})


def test_advantages_of_both_rewards_are_on_the_same_order() -> None:
    groups = simulated_groups(groups=400, group_size=4, malformed_share=0.0, seed=0)
    hard = mean_abs_advantage(HardReward(), groups)
    nuanced = mean_abs_advantage(NuancedReward(), groups)
    # Raw, the nuanced reward's advantages are ~100x the hard reward's; scaled, within 3x.
    assert nuanced.raw / hard.raw > 30
    assert 1 / 3 < nuanced.scaled / hard.scaled < 3, (hard, nuanced)


def test_step_stats_log_raw_and_scaled_rewards() -> None:
    result = score_request(NuancedReward(), RewardRequest(batch_id="b", items=ITEMS))
    stats = StepStats(step=1, policy_version=0)
    stats.add_rewards(result, [300, 300], group_size=2)
    # Raw totals 100 and -(5 + 15·0.1224/0.561) = -8.273: mean 45.86; scaled by 0.01: 0.4586.
    raw_mean = (100.0 + result.totals[1]) / 2
    assert stats.values["reward_mean"] == pytest.approx(raw_mean)
    assert stats.values["reward_scale"] == 0.01
    assert stats.values["reward_scaled_mean"] == pytest.approx(raw_mean * 0.01)
    assert stats.values["reward_scaled_std"] == pytest.approx(stats.values["reward_std"] * 0.01)
