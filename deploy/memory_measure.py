"""Measuring what the memory planner estimates, to check its formulas.

- `saved_activation_bytes`: bytes autograd keeps for backward during a forward pass (parameters
  excluded), on any device; the unit tests count them for real-width decoder layers on the CPU.
- `measure_grpo_step`: one GRPO-shaped trainer step (policy + reference LoRA, gradient
  checkpointing, logits over the completions, AdamW) on a random-weight model, with the CUDA
  allocator's peak. Meant for a GPU machine with a real-size model from
  `deploy.architectures.build_random_model`; on the CPU it runs (for tiny configs) without a peak.
"""

from collections.abc import Callable, Iterable
from typing import Any

import torch

from deploy.architectures import model_shape
from trainer.logprobs import completion_batch, move, token_logprobs
from trainer.lora import LoraSettings


def saved_activation_bytes(forward: Callable[[], Any], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the distinct storages autograd saves while `forward()` runs, minus `exclude`
    (pass the parameters: a frozen weight saved for the input's gradient is no new memory)."""
    excluded = {tensor.untyped_storage().data_ptr() for tensor in exclude}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in excluded:
            saved[key] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward()
    return sum(saved.values())


def synthetic_prompt(
    config: Any, prompt_tokens: int, max_pixels: int | None = None
) -> dict[str, torch.Tensor]:
    """Processor-shaped inputs for one X-ray (random pixels, image placeholder tokens in place)
    without a tokenizer: enough to run the real model's forward at real sizes."""
    shape = model_shape(config, "measured")
    vision = shape.vision
    image_tokens = vision.image_tokens(max_pixels)
    text_tokens = max(4, prompt_tokens - image_tokens)
    generator = torch.Generator().manual_seed(0)
    vocab = shape.text.vocab
    if shape.family == "gemma3":
        image_id = config.image_token_index
        ids = torch.randint(0, min(vocab, 100_000), (text_tokens,), generator=generator)
        ids = torch.cat([ids[:2], torch.full((image_tokens,), image_id), ids[2:]])
        size = vision.fixed_image_size
        return {
            "input_ids": ids[None],
            "attention_mask": torch.ones(1, ids.numel(), dtype=torch.long),
            "token_type_ids": (ids == image_id).long()[None],
            "pixel_values": torch.randn(1, 3, size, size, generator=generator),
        }
    image_id = config.image_token_id
    ids = torch.randint(0, min(vocab, 100_000), (text_tokens,), generator=generator)
    ids = torch.cat([ids[:2], torch.full((image_tokens,), image_id), ids[2:]])
    merge = vision.spatial_merge
    rows = merge * _largest_divisor_at_most(image_tokens, int(image_tokens**0.5))
    columns = vision.patches(max_pixels) // rows
    patch_elements = vision.pixel_values_elements(max_pixels) // vision.patches(max_pixels)
    return {
        "input_ids": ids[None],
        "attention_mask": torch.ones(1, ids.numel(), dtype=torch.long),
        "pixel_values": torch.randn(rows * columns, patch_elements, generator=generator),
        "image_grid_thw": torch.tensor([[1, rows, columns]]),
    }


def _largest_divisor_at_most(number: int, limit: int) -> int:
    return next(d for d in range(max(1, limit), 0, -1) if number % d == 0)


def measure_grpo_step(
    model: Any,
    config: Any,
    *,
    group_size: int,
    prompt_tokens: int,
    completion_tokens: int,
    lora: LoraSettings | None = None,
    max_pixels: int | None = None,
    gradient_checkpointing: bool = True,
) -> dict[str, float]:
    """Run one GRPO-shaped step on `model` (a base model, e.g. from `build_random_model`) the way
    trainer/grpo.py does: reference pass without grad, policy pass with entropy, backward, AdamW.
    Returns the CUDA peak allocated/reserved GiB (NaN off CUDA), the loss and the LoRA gradient norm."""
    from peft import get_peft_model

    lora = lora or LoraSettings(dropout=0.0)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    model.requires_grad_(False)
    peft_model = get_peft_model(model, lora.peft_config(), adapter_name="policy")
    peft_model.add_adapter("reference", lora.peft_config())
    for name, parameter in peft_model.named_parameters():
        parameter.requires_grad_(".policy." in name)
    peft_model.set_adapter("policy")
    if gradient_checkpointing:
        peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        peft_model.enable_input_require_grads()
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-6)
    prompt = synthetic_prompt(config, prompt_tokens, max_pixels)
    completions = [
        [(7 * row + column) % 1000 + 10 for column in range(completion_tokens)] for row in range(group_size)
    ]
    batch = move(completion_batch(prompt, completions, pad_id=0), device, dtype)
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    peft_model.train()
    with torch.no_grad():
        peft_model.set_adapter("reference")
        reference, _ = token_logprobs(peft_model, batch)
        peft_model.set_adapter("policy")
        for name, parameter in peft_model.named_parameters():
            parameter.requires_grad_(".policy." in name)
    logprobs, entropy = token_logprobs(peft_model, batch, with_entropy=True)
    mask = batch.completion_mask
    loss = -(logprobs * mask).sum() / mask.numel() + (reference - logprobs).abs().mean()
    loss.backward()
    grad_norm = torch.linalg.vector_norm(
        torch.stack([p.grad.norm() for p in trainable if p.grad is not None])
    )
    optimizer.step()
    result = {
        "loss": float(loss.detach()),
        "entropy": float(entropy.detach().mean()),
        "lora_grad_norm": float(grad_norm),
    }
    if on_cuda:
        torch.cuda.synchronize(device)
        result["peak_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 1024**3
        result["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 1024**3
    else:
        result["peak_allocated_gib"] = result["peak_reserved_gib"] = float("nan")
    return result
