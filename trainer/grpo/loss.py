"""The GRPO objective, one short module to check against the equations.

For a group of G completions of one X-ray with rewards r_1..r_G:

    A_i = r_i - mean(r)                               (Dr. GRPO: no division by std(r))
    A_i = (r_i - mean(r)) / (std(r) + eps)            (original GRPO, `scale_rewards="group_std"`)

For every completion token t of completion i, with rho = exp(logp - logp_old):

    surrogate_it = min(rho * A_i, clip(rho, 1 - eps_low, 1 + eps_high) * A_i)
    kl_it        = exp(logp_ref - logp) - (logp_ref - logp) - 1      (k3 estimator, >= 0)
    loss_it      = -(surrogate_it - beta * kl_it)

and the batch loss sums loss_it over real tokens, divided by
    dr_grpo:        number of completions x max_tokens (a constant: no length bias)
    token_mean:     number of real tokens (DAPO)
    sequence_mean:  each completion by its own length, then the mean over completions (original GRPO)
ChexReason's setting: beta = 0.15, eps_low = 0.15, eps_high = 0.22, Dr. GRPO normalisation.

Temperature. The completions are sampled from softmax(logits / T), T = `sampling.temperature`
(0.8 by default, with top-p 0.95). With `logprobs="tempered"` (the default) logp, logp_old and
logp_ref are all taken under softmax(logits / T), as TRL's GRPOTrainer and verl do: the ratio then
compares the distribution that drew the tokens with its update, the group-mean baseline centres the
score function of that same distribution, and the k3 estimator sees tokens drawn from the policy it
assumes. With `logprobs="raw"` they are taken at T = 1 (the model's own distribution): tokens then
come from one distribution and the gradient's log-likelihood from another. Neither renormalises over
the top-p nucleus (TRL does not either): a token an update pushed outside it would get an infinite
ratio. The rollout server's logprobs are raw in both modes; the trainer compares them with its own
raw logprobs (trainer.logprobs).
"""

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from shared.config import StrictModel

Normalisation = Literal["dr_grpo", "token_mean", "sequence_mean"]


class GrpoLossSettings(StrictModel):
    beta: float = Field(0.15, ge=0.0, description="weight of the KL penalty to the reference (SFT) policy")
    clip_low: float = Field(
        0.15, ge=0.0, lt=1.0, description="eps_low: the ratio is clipped below at 1 - eps_low"
    )
    clip_high: float = Field(0.22, ge=0.0, description="eps_high: the ratio is clipped above at 1 + eps_high")
    normalisation: Normalisation = Field(
        "dr_grpo",
        description="what the summed token losses are divided by: dr_grpo (completions x max_tokens), "
        "token_mean (real tokens) or sequence_mean (each completion's length)",
    )
    scale_rewards: Literal["none", "group_std"] = Field(
        "none",
        description="none: advantages r - mean(r) (Dr. GRPO); group_std: also divided by the group's std",
    )
    logprobs: Literal["tempered", "raw"] = Field(
        "tempered",
        description="the distribution logp, logp_old and logp_ref (so the ratio and the KL) are taken under: "
        "tempered at the sampling temperature, or raw (see trainer/grpo/loss.py)",
    )


def loss_temperature(settings: GrpoLossSettings, sampling_temperature: float) -> float:
    """The temperature logp, logp_old and logp_ref are taken at."""
    return sampling_temperature if settings.logprobs == "tempered" else 1.0


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: str = "none", eps: float = 1e-4
) -> torch.Tensor:
    """rewards [B*G] in groups of G consecutive completions -> advantages [B*G]."""
    groups = rewards.view(-1, group_size)
    centred = groups - groups.mean(dim=1, keepdim=True)
    if scale == "group_std":
        centred = centred / (groups.std(dim=1, keepdim=True) + eps)
    return centred.reshape(-1)


@dataclass
class LossStats:
    """Sums over real tokens (divide by `tokens` for means), so groups accumulate exactly."""

    tokens: float
    kl: float
    clipped_low: float
    clipped_high: float
    ratio_max: float


def token_weights(
    mask: torch.Tensor, settings: GrpoLossSettings, batch_completions: int, max_tokens: int, batch_tokens: int
) -> torch.Tensor:
    """Per-token weights [N, T] such that (loss_it * weight).sum() is the normalised loss.

    The arguments describe the whole step's batch, so a batch split into groups for memory sums
    to exactly the loss of one pass.
    """
    mask = mask.float()
    if settings.normalisation == "dr_grpo":
        return mask / (batch_completions * max_tokens)
    if settings.normalisation == "token_mean":
        return mask / max(1, batch_tokens)
    lengths = mask.sum(dim=1, keepdim=True).clamp(min=1.0)
    return mask / lengths / batch_completions


def grpo_token_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor,
    settings: GrpoLossSettings,
) -> tuple[torch.Tensor, LossStats]:
    """logprobs/old/ref/mask/weights: [N, T]; advantages: [N]. Returns the weighted loss sum."""
    mask_f = mask.float()
    advantages = advantages.unsqueeze(1)
    ratio = torch.exp(logprobs - old_logprobs)
    clipped_ratio = torch.clamp(ratio, 1.0 - settings.clip_low, 1.0 + settings.clip_high)
    surrogate = torch.minimum(ratio * advantages, clipped_ratio * advantages)
    if ref_logprobs is not None and settings.beta > 0:
        delta = ref_logprobs - logprobs
        kl = torch.exp(delta) - delta - 1.0
    else:
        kl = torch.zeros_like(logprobs)
    per_token = -(surrogate - settings.beta * kl)
    loss = (per_token * weights).sum()
    with torch.no_grad():
        low = ((ratio < 1.0 - settings.clip_low) & (advantages < 0)).float()
        high = ((ratio > 1.0 + settings.clip_high) & (advantages > 0)).float()
        stats = LossStats(
            tokens=mask_f.sum().item(),
            kl=(kl * mask_f).sum().item(),
            clipped_low=(low * mask_f).sum().item(),
            clipped_high=(high * mask_f).sum().item(),
            ratio_max=(ratio * mask_f).max().item() if mask_f.any() else 1.0,
        )
    return loss, stats
