"""The behaviour policy of a stale batch (`grpo.max_staleness: 1`): the logprobs of the adapter
version that sampled it, which the importance ratio divides by (the clip then bounds the ratio).

- Raw loss (`loss.logprobs: raw`): the rollout server's logprobs themselves, vLLM's raw logprobs of
  the version that sampled (the server returns them with the version). No pass in the trainer.
- Tempered loss (the default): the served logprobs are raw, and log softmax(logits / T) of a token
  needs every logit at its position, so one served number per token cannot be re-tempered. The
  trainer keeps a copy of the version that samples the next batch (a frozen third LoRA adapter,
  its tensors copied before each step's updates) and recomputes the tempered logprobs under it: one
  no-grad pass per stale group, as mu > 1 costs. The copy's raw logprobs are checked against the
  server's, like with like, in the step's logged agreement.
"""

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch

from shared.schemas import RolloutResult
from trainer.logprobs import CompletionBatch, ImageEncoding, policy_logprobs, served_logprobs

Group = tuple[CompletionBatch, ImageEncoding | None, RolloutResult]


class BehaviourCopy:
    """A frozen copy of the policy LoRA under another adapter name, and the version it holds."""

    def __init__(self, model: Any, policy: str, name: str = "behaviour"):
        self.model, self.policy, self.name = model, policy, name
        self.version: int | None = None

    def keep(self, version: int) -> None:
        """Copy the policy LoRA's tensors (version `version`) into the copy."""
        if self.name not in self.model.peft_config:
            # No dropout in the copy: an SFT adapter's config carries the SFT's (0.1), and the
            # trainer runs its passes in train mode, where dropout would make the copy's logprobs
            # another policy's (the trainer zeroes the policy's own dropout at set-up).
            config = copy.deepcopy(self.model.peft_config[self.policy])
            config.lora_dropout = 0.0
            self.model.add_adapter(self.name, config)
            self.model.set_adapter(self.policy)  # the copy stays frozen, the policy trainable
        parameters = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, parameter in parameters.items():
                if f".{self.policy}." in name:
                    parameters[name.replace(f".{self.policy}.", f".{self.name}.")].copy_(parameter)
        self.version = version

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        self.model.set_adapter(self.name)
        try:
            yield
        finally:
            self.model.set_adapter(self.policy)  # also makes the policy LoRA trainable again

    def logprobs(self, version: int, groups: list[Group], temperature: float) -> tuple[list, list]:
        """(logprobs at `temperature`, raw logprobs) [G, T] per group under the copy."""
        if self.version != version:
            raise RuntimeError(
                f"a batch sampled by version {version}, but the trainer's behaviour copy holds version "
                f"{self.version}: the importance ratio would divide by the wrong policy"
            )
        old, raw = [], []
        with torch.no_grad(), self.active():
            for group, encoded, _ in groups:
                result = policy_logprobs(self.model, group, temperature, with_raw=True, image=encoded)
                old.append(result.logprobs)
                raw.append(result.raw)
        return old, raw


def behaviour_logprobs(
    mode: str, copy: BehaviourCopy, version: int, groups: list[Group], temperature: float
) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """The behaviour policy's logprobs [G, T] per group at the loss temperature, and the trainer's
    raw logprobs of that same version to compare with the server's (None: nothing to compare)."""
    if mode == "raw":
        return [served_logprobs(result, group.completion_mask) for group, _, result in groups], [None] * len(
            groups
        )
    return copy.logprobs(version, groups, temperature)
