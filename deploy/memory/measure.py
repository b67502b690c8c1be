"""Measuring what the memory planner estimates, to check its formulas.

- `saved_activation_bytes`: bytes autograd keeps for backward during a forward pass (parameters
  excluded), on any device; the unit tests count them for real-width decoder layers on the CPU.
- `measure_sft_step` and `measure_grpo_step`: the trainer's SFT and GRPO steps (the trainer's own
  loss functions, LoRA as it sets it up, gradient checkpointing, AdamW) on a random-weight model,
  with the CUDA allocator's peak over a steady-state step (the second: AdamW's moments exist from
  the first). Meant for a GPU machine with a real-size model from
  `deploy.architectures.build_random_model` (`benchmarks/gpu_memory.py`); on the CPU they run
  (for small configs) without a peak. Each leaves the base model as it found it (LoRA removed).
"""

import contextlib
import gc
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from deploy.architectures import model_shape
from trainer.grpo.loss import GrpoLossSettings, group_advantages, grpo_token_loss, token_weights
from trainer.logprobs import IMAGE_KEYS, SEQUENCE_KEYS, completion_batch, move, token_logprobs
from trainer.lora import LoraSettings

GIB = 1024**3
MEASURED_STEPS = 2  # the peak is read over the last one


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


@contextlib.contextmanager
def cuda_peak(device: torch.device) -> Iterator[dict[str, float]]:
    """Peak allocated and reserved GiB of the CUDA caching allocator inside the block (NaN off CUDA),
    and the device memory in use outside the allocator (context, cuBLAS workspaces) at its end."""
    result = {
        "peak_allocated_gib": float("nan"),
        "peak_reserved_gib": float("nan"),
        "outside_allocator_gib": float("nan"),
    }
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    yield result
    if on_cuda:
        torch.cuda.synchronize(device)
        free, total = torch.cuda.mem_get_info(device)
        result["peak_allocated_gib"] = torch.cuda.max_memory_allocated(device) / GIB
        result["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / GIB
        result["outside_allocator_gib"] = (total - free - torch.cuda.memory_reserved(device)) / GIB


def _attach_lora(model: Any, lora: LoraSettings, gradient_checkpointing: bool, reference: bool) -> Any:
    """The trainer's set-up (trainer/model.py, trainer/grpo/trainer.py): frozen base, a trainable "policy"
    LoRA (and a frozen "reference" one for GRPO), checkpointing with inputs that require grad."""
    # peft and the trainer (seconds to import) load only when a GPU is measured
    from peft import get_peft_model

    model.requires_grad_(False)
    peft_model = get_peft_model(model, lora.peft_config(), adapter_name="policy")
    if reference:
        peft_model.add_adapter("reference", lora.peft_config())
        peft_model.set_adapter("policy")
    for name, parameter in peft_model.named_parameters():
        parameter.requires_grad_(".policy." in name)
    if gradient_checkpointing:
        peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        peft_model.enable_input_require_grads()
    return peft_model


def _detach_lora(peft_model: Any) -> None:
    """Remove the LoRA layers again and free what the step left behind."""
    peft_model.unload()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _synthetic_ids(rows: int, length: int, salt: int) -> list[list[int]]:
    return [[(salt * row + 13 * column) % 1000 + 10 for column in range(length)] for row in range(rows)]


def measure_sft_step(
    model: Any,
    config: Any,
    *,
    lora: LoraSettings,
    prompt_tokens: int,
    target_tokens: int,
    max_pixels: int | None = None,
    gradient_checkpointing: bool = True,
    max_grad_norm: float = 1.0,
) -> dict[str, float]:
    """One micro-batch of one X-ray per step through trainer/sft/training.py's `optimizer_step` (assistant-only
    loss over `target_tokens`, LoRA dropout as `lora` says); peak over the last of MEASURED_STEPS."""
    # peft and the trainer (seconds to import) load only when a GPU is measured
    from trainer.sft.data import IGNORE_INDEX, SftBatch
    from trainer.sft.training import optimizer_step

    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    peft_model = _attach_lora(model, lora, gradient_checkpointing, reference=False)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=5e-5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    prompt = synthetic_prompt(config, prompt_tokens, max_pixels)
    target = torch.tensor(_synthetic_ids(1, target_tokens, 11))
    inputs = {}
    for key, value in prompt.items():
        if key in SEQUENCE_KEYS:
            tail = (
                target
                if key == "input_ids"
                else (torch.ones_like if key == "attention_mask" else torch.zeros_like)(target)
            )
            inputs[key] = torch.cat([value, tail.to(value.dtype)], dim=1)
        elif key in IMAGE_KEYS:
            inputs[key] = value
    labels = torch.cat([torch.full_like(prompt["input_ids"], IGNORE_INDEX), target], dim=1)
    batch = SftBatch(inputs, labels).to(device, dtype)
    peft_model.train()
    try:
        for step in range(MEASURED_STEPS):
            with cuda_peak(device) if step == MEASURED_STEPS - 1 else contextlib.nullcontext({}) as peak:
                metrics = optimizer_step(peft_model, [batch], trainable, optimizer, scheduler, max_grad_norm)
        return {"loss": metrics["loss"], "lora_grad_norm": metrics["grad_norm"], **peak}
    finally:
        del optimizer, trainable
        _detach_lora(peft_model)


def measure_grpo_step(
    model: Any,
    config: Any,
    *,
    group_size: int,
    prompt_tokens: int,
    completion_tokens: int,
    batch_size: int = 1,
    lora: LoraSettings | None = None,
    loss: GrpoLossSettings | None = None,
    max_pixels: int | None = None,
    gradient_checkpointing: bool = True,
    grad_clip: float = 1.0,
) -> dict[str, float]:
    """GRPO steps shaped as trainer/grpo/trainer.py's `_train`: `batch_size` X-rays' groups of `group_size`
    completions all on the device, the reference pass (frozen "reference" LoRA, no grad) over every
    group, then per group the policy pass with entropy, the GRPO token loss and its backward; one
    clipped AdamW step. Peak over the last of MEASURED_STEPS."""
    lora = lora or LoraSettings(dropout=0.0)
    loss = loss or GrpoLossSettings()
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    peft_model = _attach_lora(model, lora, gradient_checkpointing, reference=True)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-6)
    prompt = synthetic_prompt(config, prompt_tokens, max_pixels)
    completions = _synthetic_ids(group_size, completion_tokens, 7)
    groups = [move(completion_batch(prompt, completions, pad_id=0), device, dtype) for _ in range(batch_size)]
    rewards = torch.tensor([float(index % 2) for index in range(batch_size * group_size)])
    advantages = group_advantages(rewards, group_size, loss.scale_rewards)
    total_completions, total_tokens = len(rewards), len(rewards) * completion_tokens
    peft_model.train()
    try:
        for step in range(MEASURED_STEPS):
            with cuda_peak(device) if step == MEASURED_STEPS - 1 else contextlib.nullcontext({}) as peak:
                result = _grpo_update(peft_model, groups, advantages, trainable, optimizer, loss, total_completions,
                                      completion_tokens, total_tokens, grad_clip)  # fmt: skip
        return {**result, **peak}
    finally:
        del optimizer, trainable, groups
        _detach_lora(peft_model)


def _grpo_update(
    peft_model: Any,
    groups: list[Any],
    advantages: torch.Tensor,
    trainable: list[torch.nn.Parameter],
    optimizer: Any,
    loss_settings: GrpoLossSettings,
    total_completions: int,
    max_tokens: int,
    total_tokens: int,
    grad_clip: float,
) -> dict[str, float]:
    with torch.no_grad():
        peft_model.set_adapter("reference")
        references = [token_logprobs(peft_model, batch)[0] for batch in groups]
        peft_model.set_adapter("policy")  # also makes the policy LoRA trainable again
    optimizer.zero_grad(set_to_none=True)
    total, entropies = 0.0, []
    group_size = groups[0].completion_ids.shape[0]
    for index, batch in enumerate(groups):
        logprobs, entropy = token_logprobs(peft_model, batch, with_entropy=True)
        weights = token_weights(
            batch.completion_mask, loss_settings, total_completions, max_tokens, total_tokens
        )
        group_advantage = advantages[index * group_size : (index + 1) * group_size].to(logprobs.device)
        loss, _ = grpo_token_loss(
            logprobs, logprobs.detach(), references[index], group_advantage, batch.completion_mask, weights,
            loss_settings,
        )  # fmt: skip
        loss.backward()
        total += float(loss.detach())
        entropies.append(float(entropy.mean()))
    grad_norm = torch.nn.utils.clip_grad_norm_(trainable, grad_clip)
    optimizer.step()
    return {"loss": total, "entropy": sum(entropies) / len(entropies), "lora_grad_norm": float(grad_norm)}
