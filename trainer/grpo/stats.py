"""What one GRPO step logs: rewards and their components, per-label F1, KL, entropy, clip
fractions, lengths, zero-variance groups, train/inference logprob agreement, the learning rate and
gradient norms of the step's updates, and the time split."""

import time
from typing import Any

import torch

from shared.schemas import RewardResult, RolloutResult
from trainer.grpo.loss import LossStats


class StepStats:
    def __init__(self, step: int, policy_version: int | None = None):
        # policy_version: the adapter version the rollout server says produced the completions
        self.values: dict[str, Any] = {"step": step, "policy_version": policy_version}
        self._started = time.perf_counter()
        self._tokens = self._kl = self._low = self._high = self._entropy = self._loss = 0.0
        self._ratio_max = 1.0
        self._diffs: list[torch.Tensor] = []

    def time(self, key: str, started: float) -> None:
        self.values[key] = time.perf_counter() - started

    def add_rewards(self, reward: RewardResult, lengths: list[int], group_size: int) -> None:
        totals = torch.tensor(reward.totals, dtype=torch.float64)
        groups = totals.view(-1, group_size)
        self.values.update(
            reward_mean=totals.mean().item(),  # raw, as the reward reports it
            reward_std=totals.std(unbiased=False).item(),
            reward_scale=reward.scale,  # the advantages are taken on reward x scale
            reward_scaled_mean=totals.mean().item() * reward.scale,
            reward_scaled_std=totals.std(unbiased=False).item() * reward.scale,
            reward_name=reward.reward_name,
            reward_version=reward.reward_version,
            zero_variance_groups=(groups.std(dim=1, unbiased=False) < 1e-9).double().mean().item(),
            completion_len_mean=sum(lengths) / len(lengths),
            completion_len_min=min(lengths),
            completion_len_max=max(lengths),
        )
        for component in sorted({key for parts in reward.components for key in parts}):
            values = [parts.get(component, 0.0) for parts in reward.components]
            self.values[f"reward/{component}"] = sum(values) / len(values)
        for label, counts in reward.label_counts.items():
            denominator = 2 * counts.tp + counts.fp + counts.fn
            self.values[f"label_f1/{label}"] = 2 * counts.tp / denominator if denominator else 0.0

    def add_group(
        self,
        loss: float,
        loss_stats: LossStats,
        entropy: torch.Tensor | None,
        mask: torch.Tensor,
        trainer_logprobs: torch.Tensor | None,
        result: RolloutResult,
    ) -> None:
        """`trainer_logprobs`: ours at temperature 1, as the server's (vLLM's raw logprobs) are, of the
        version that sampled; None when the trainer computed none (a stale batch under the raw loss,
        whose ratio takes the served logprobs as they are)."""
        self._loss += loss
        self._tokens += loss_stats.tokens
        self._kl += loss_stats.kl
        self._low += loss_stats.clipped_low
        self._high += loss_stats.clipped_high
        self._ratio_max = max(self._ratio_max, loss_stats.ratio_max)
        if entropy is not None:
            self._entropy += (entropy.detach() * mask).sum().item()
        for row, completion in enumerate(result.completions if trainer_logprobs is not None else []):
            served = torch.tensor(completion.logprobs, dtype=torch.float64)
            ours = trainer_logprobs[row, : len(served)].detach().double().cpu()
            self._diffs.append((ours - served).abs())

    def add_updates(self, lr: float, grad_norms: list[float]) -> None:
        """The learning rate all of the step's updates used, and each update's gradient norm
        (before clipping)."""
        self.values.update(
            lr=lr,
            grad_norm=sum(grad_norms) / len(grad_norms),
            grad_norm_max=max(grad_norms),
            updates=len(grad_norms),
        )

    def finish(self, agreement_warn: float) -> dict[str, Any]:
        tokens = max(1.0, self._tokens)
        if self._diffs:  # none when nothing was compared: then no agreement is claimed
            diffs = torch.cat(self._diffs)
            self.values.update(
                logprob_diff_mean=diffs.mean().item(),
                logprob_diff_max=diffs.max().item(),
                logprob_mismatch_warning=bool(diffs.max().item() > agreement_warn),
            )
        self.values.update(
            loss=self._loss,
            kl=self._kl / tokens,
            entropy=self._entropy / tokens,
            clip_low_frac=self._low / tokens,
            clip_high_frac=self._high / tokens,
            ratio_max=self._ratio_max,
            step_s=time.perf_counter() - self._started,
        )
        return self.values
