"""Per-token log-probabilities of sampled completions under the trainer's model.

The GRPO loss takes them at a temperature (`GrpoLossSettings.logprobs`): the logits divided by the
sampling temperature, or the raw logits. The rollout server returns vLLM's `raw_logprobs` (the
engine default: before temperature and top-p; `processed_logprobs` would also renormalise over the
top-p nucleus, which no trainer-side distribution reproduces), so the agreement check always
compares the trainer's raw logprobs with the server's, whichever distribution the loss uses.
"""

from dataclasses import dataclass
from typing import Any

import torch

from shared.chat import render_prompt
from shared.prompts import PromptRegistry, user_messages
from shared.schemas import RolloutResult

# Processor outputs laid out along the token axis (extended over the completion) versus per image.
SEQUENCE_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")
IMAGE_KEYS = ("pixel_values", "image_grid_thw")


def prompt_inputs(processor: Any, prompt_text: str, image: Any) -> dict[str, torch.Tensor]:
    """The processor's tensors for one X-ray and its rendered prompt (batch of one)."""
    features = processor(text=[prompt_text], images=[image], return_tensors="pt")
    return {key: value for key, value in features.items() if isinstance(value, torch.Tensor)}


def format_prompt_inputs(processor: Any, prompt_format: str, image: Any, prompts: PromptRegistry) -> dict:
    return prompt_inputs(
        processor, render_prompt(processor, user_messages(prompts.get(prompt_format))), image
    )


@dataclass
class CompletionBatch:
    """G completions of one prompt, right-padded: the model inputs and where the completions sit.

    The X-ray is held once (`image_inputs`), not once per row: each forward pass sends it through
    the vision tower once and gives its encoding to all G rows (`image_encoding`), where
    transformers, handed G copies of `pixel_values`, would encode it G times."""

    inputs: dict[str, torch.Tensor]  # the G rows' inputs; image_grid_thw per row, no pixels
    image_inputs: dict[str, torch.Tensor]  # the prompt's pixels (and grid), one copy
    completion_ids: torch.Tensor  # [G, T] padded with 0
    completion_mask: torch.Tensor  # [G, T] 1 on real completion tokens
    prompt_length: int

    @property
    def group_size(self) -> int:
        return self.completion_ids.shape[0]

    def repeated_inputs(self) -> dict[str, torch.Tensor]:
        """The plain transformers inputs, each row with its own copy of the pixels (the model then
        encodes the X-ray G times): the reference the shared encoding is checked against."""
        pixels = {
            key: torch.cat([value] * self.group_size, dim=0)
            for key, value in self.image_inputs.items()
            if key not in self.inputs
        }
        return {**self.inputs, **pixels}


def completion_batch(
    prompt: dict[str, torch.Tensor], completions: list[list[int]], pad_id: int, causal_images: bool = False
) -> CompletionBatch:
    """`causal_images`: attend causally among image tokens, as vLLM does outside its FlashAttention
    backend (Gemma3's `token_type_ids` otherwise make transformers attend bidirectionally there)."""
    group, longest = len(completions), max(1, max(len(ids) for ids in completions))
    completion_ids = torch.full((group, longest), pad_id, dtype=torch.long)
    completion_mask = torch.zeros((group, longest), dtype=torch.long)
    for row, ids in enumerate(completions):
        completion_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        completion_mask[row, : len(ids)] = 1
    prompt_length = prompt["input_ids"].shape[1]
    inputs: dict[str, torch.Tensor] = {}
    image_inputs: dict[str, torch.Tensor] = {}
    for key, value in prompt.items():
        if key in SEQUENCE_KEYS:
            repeated = value.expand(group, -1)
            if key == "input_ids":
                tail = completion_ids
            elif key == "attention_mask":
                tail = completion_mask
            else:
                tail = torch.zeros_like(completion_ids)
            inputs[key] = torch.cat([repeated, tail.to(value.dtype)], dim=1)
            if key == "token_type_ids" and causal_images:
                inputs[key] = torch.zeros_like(inputs[key])
        elif key in IMAGE_KEYS:
            image_inputs[key] = value
            if key == "image_grid_thw":  # Qwen-VL's 3-D positions read one grid per row
                inputs[key] = torch.cat([value] * group, dim=0)
        else:
            inputs[key] = value
    return CompletionBatch(inputs, image_inputs, completion_ids, completion_mask, prompt_length)


def move(
    batch: CompletionBatch, device: torch.device | str, dtype: torch.dtype | None = None
) -> CompletionBatch:
    def moved(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in tensors.items():
            value = value.to(device)
            if dtype is not None and key == "pixel_values":
                value = value.to(dtype)
            out[key] = value
        return out

    return CompletionBatch(
        moved(batch.inputs),
        moved(batch.image_inputs),
        batch.completion_ids.to(device),
        batch.completion_mask.to(device),
        batch.prompt_length,
    )


ImageEncoding = dict[str, Any]  # transformers' `mm_encoder_outputs` for a batch's G rows


def image_encoding(model: Any, batch: CompletionBatch) -> ImageEncoding | None:
    """The batch's X-ray through the vision tower and projector once, laid out for its G rows (the
    `mm_encoder_outputs` transformers' Gemma3 and Qwen2.5-VL take in place of pixels); None for a
    text-only batch."""
    if "pixel_values" not in batch.image_inputs:
        return None
    # transformers and peft load with the model, not with this module (trainer/sft/data.py imports it)
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    features = base.get_image_features(**batch.image_inputs).pooler_output
    group = batch.group_size
    if isinstance(features, torch.Tensor):  # Gemma3: [images, tokens, hidden]
        rows = (
            features.expand(group, *features.shape[1:])
            if features.shape[0] == 1
            else features.repeat(group, *([1] * (features.dim() - 1)))
        )
    else:  # Qwen-VL: one [tokens, hidden] tensor per image
        rows = tuple(features) * group
    return {"image": BaseModelOutputWithPooling(pooler_output=rows)}


def vision_is_frozen(model: Any) -> bool:
    """True when nothing trains in, and no adapter touches, the path from pixels to image embeddings
    (everything of the inner model but its language model): an X-ray's encoding is then the same
    under every adapter (policy, reference, behaviour) and needs no gradient, so one encoding per
    step serves every pass. False when the layout is unknown."""
    # transformers and peft load with the model, not with this module (trainer/sft/data.py imports it)
    from peft.tuners.tuners_utils import BaseTunerLayer

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, "model", None)
    if inner is None or not hasattr(inner, "language_model"):
        return False
    for name, child in inner.named_children():
        if name == "language_model":
            continue
        if any(p.requires_grad for p in child.parameters()):
            return False
        if any(isinstance(module, BaseTunerLayer) for module in child.modules()):
            return False
    return True


@dataclass
class PolicyLogprobs:
    logprobs: torch.Tensor  # [G, T] at the requested temperature, with the graph for backward
    entropy: torch.Tensor | None  # [G, T] of the same (tempered) distribution, detached
    raw: torch.Tensor | None  # [G, T] at temperature 1, detached: comparable to vLLM's raw_logprobs


def policy_logprobs(
    model: Any,
    batch: CompletionBatch,
    temperature: float = 1.0,
    with_entropy: bool = False,
    with_raw: bool = False,
    image: ImageEncoding | None = None,
) -> PolicyLogprobs:
    """Log-probabilities [G, T] of the completion tokens under softmax(logits / temperature).

    `image`: the X-ray's encoding (`image_encoding`) when the caller shares one across passes;
    otherwise this pass encodes it, once for all G rows. Only the completion positions' logits are
    materialised (`logits_to_keep`): with a 262k vocabulary the full [G, L, V] logits would not fit.
    """
    steps = batch.completion_ids.shape[1]
    if image is None:
        image = image_encoding(model, batch)
    encoded = {"mm_encoder_outputs": image} if image is not None else {}
    output = model(**batch.inputs, **encoded, logits_to_keep=steps + 1, use_cache=False)
    logits = output.logits[:, :-1, :].float()
    index = batch.completion_ids.unsqueeze(-1)
    log_probs = torch.log_softmax(logits / temperature if temperature != 1.0 else logits, dim=-1)
    chosen = log_probs.gather(-1, index).squeeze(-1)
    entropy = raw = None
    with torch.no_grad():  # logged, not optimised: keeps no extra [G, T, V] tensor for backward
        if with_entropy:
            detached = log_probs.detach()
            entropy = -(detached.exp() * detached).sum(-1)
        if with_raw:
            if temperature == 1.0:
                raw = chosen.detach()
            else:
                detached = logits.detach()
                raw = detached.gather(-1, index).squeeze(-1) - torch.logsumexp(detached, dim=-1)
    return PolicyLogprobs(chosen, entropy, raw)


def token_logprobs(model: Any, batch: CompletionBatch, with_entropy: bool = False):
    """(raw logprobs [G, T], entropy [G, T] or None): `policy_logprobs` at temperature 1."""
    result = policy_logprobs(model, batch, with_entropy=with_entropy)
    return result.logprobs, result.entropy


def served_logprobs(result: RolloutResult, mask: torch.Tensor) -> torch.Tensor:
    """The rollout server's logprobs of a group's completions, laid out as `mask` [G, T] (0 on padding)."""
    served = torch.zeros(mask.shape, dtype=torch.float32)
    for row, completion in enumerate(result.completions):
        served[row, : len(completion.logprobs)] = torch.tensor(completion.logprobs, dtype=torch.float32)
    return served.to(mask.device)
