"""The GRPO loss on a hand-made batch against values derived by hand (see the comments)."""

import math

import pytest
import torch

from trainer.grpo.loss import GrpoLossSettings, group_advantages, grpo_token_loss, token_weights

LN2 = math.log(2.0)
# One group of two completions, rewards (1, 0) -> Dr. GRPO advantages (+0.5, -0.5).
# Ratios rho = exp(logp - old) per token; the third token of completion 0 is padding.
RATIOS = [[1.5, 0.8, 1.0], [0.5, 1.1, 2.0]]
DELTAS = [[0.0, LN2, 9.0], [0.0, -LN2, 0.0]]  # logp_ref - logp; 9.0 sits on padding
MASK = [[1, 1, 0], [1, 1, 1]]
# Hand derivation, beta = 0.15, clip 1 - 0.15 = 0.85 and 1 + 0.22 = 1.22:
# (0,0) rho 1.5, A +0.5: min(0.75, 1.22 * 0.5 = 0.61) = 0.61 (clipped high); kl 0      -> loss -0.61
# (0,1) rho 0.8, A +0.5: min(0.40, 0.85 * 0.5 = 0.425) = 0.40;  kl e^ln2 - ln2 - 1 = 0.306853
#                                                               -> loss -(0.40 - 0.15 * 0.306853) = -0.353972
# (1,0) rho 0.5, A -0.5: min(-0.25, 0.85 * -0.5 = -0.425) = -0.425 (clipped low)     -> loss 0.425
# (1,1) rho 1.1, A -0.5: -0.55; kl e^-ln2 + ln2 - 1 = 0.193147 -> loss 0.55 + 0.15 * 0.193147 = 0.578972
# (1,2) rho 2.0, A -0.5: min(-1.0, 1.22 * -0.5 = -0.61) = -1.0 (not clipped)          -> loss 1.0
# Sum over real tokens: -0.61 - 0.353972 + 0.425 + 0.578972 + 1.0 = 1.04
EXPECTED = {
    "dr_grpo": 1.04 / (2 * 3),  # completions x max_tokens
    "token_mean": 1.04 / 5,  # real tokens
    "sequence_mean": ((-0.61 - 0.353972) / 2 + (0.425 + 0.578972 + 1.0) / 3) / 2,
}


def hand_batch():
    old = torch.full((2, 3), math.log(0.5))
    logprobs = (old + torch.log(torch.tensor(RATIOS))).requires_grad_(True)
    ref = logprobs.detach() + torch.tensor(DELTAS)
    advantages = group_advantages(torch.tensor([1.0, 0.0]), group_size=2)
    return logprobs, old, ref, advantages, torch.tensor(MASK)


@pytest.mark.parametrize("normalisation", sorted(EXPECTED))
def test_loss_matches_hand_derivation(normalisation):
    settings = GrpoLossSettings(normalisation=normalisation)
    logprobs, old, ref, advantages, mask = hand_batch()
    assert advantages.tolist() == [0.5, -0.5]
    weights = token_weights(mask, settings, batch_completions=2, max_tokens=3, batch_tokens=5)
    loss, stats = grpo_token_loss(logprobs, old, ref, advantages, mask, weights, settings)
    assert loss.item() == pytest.approx(EXPECTED[normalisation], abs=1e-5)
    assert stats.tokens == 5 and stats.clipped_high == 1 and stats.clipped_low == 1
    assert stats.kl == pytest.approx(0.306853 + 0.193147, abs=1e-5)


def test_clipped_tokens_get_no_policy_gradient():
    settings = GrpoLossSettings()
    logprobs, old, ref, advantages, mask = hand_batch()
    loss, _ = grpo_token_loss(
        logprobs, old, ref, advantages, mask, token_weights(mask, settings, 2, 3, 5), settings
    )
    loss.backward()
    grad = logprobs.grad
    assert grad[0, 0].item() == 0.0  # clipped high, KL gradient 1 - e^0 = 0
    assert grad[1, 0].item() == 0.0  # clipped low
    assert grad[0, 2].item() == 0.0  # padding
    # Unclipped token (1,2): d/dlogp of -(rho * A) = -rho * A = -2.0 * -0.5 = 1.0, weighted by 1/6.
    assert grad[1, 2].item() == pytest.approx(1.0 / 6, abs=1e-6)


def test_group_std_scaling_and_zero_variance_groups():
    rewards = torch.tensor([1.0, 3.0, 2.0, 2.0])
    assert group_advantages(rewards, 2).tolist() == [-1.0, 1.0, 0.0, 0.0]
    scaled = group_advantages(rewards, 2, scale="group_std")
    assert scaled[1].item() == pytest.approx(1.0 / (math.sqrt(2.0) + 1e-4), rel=1e-5)
    assert scaled[2:].tolist() == [0.0, 0.0]


def test_groups_accumulate_to_the_whole_batch_loss():
    settings = GrpoLossSettings()
    logprobs, old, ref, advantages, mask = hand_batch()
    whole, _ = grpo_token_loss(
        logprobs, old, ref, advantages, mask, token_weights(mask, settings, 2, 3, 5), settings
    )
    parts = sum(
        grpo_token_loss(
            logprobs[i : i + 1], old[i : i + 1], ref[i : i + 1], advantages[i : i + 1], mask[i : i + 1],
            token_weights(mask[i : i + 1], settings, 2, 3, 5), settings,
        )[0]
        for i in range(2)
    )  # fmt: skip
    assert parts.item() == pytest.approx(whole.item(), abs=1e-7)
