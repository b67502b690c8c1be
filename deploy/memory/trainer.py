"""The trainer's side of the memory plan: the GRPO step and the SFT step (SFT runs while the
rollout server is already up, so both live in the same share)."""

from deploy.architectures import ModelShape, lora_parameter_count
from deploy.memory.budget import DTYPE_BYTES, MemoryItem, ProcessBudget, dtype_name, gib
from deploy.memory.estimates import (
    FP32,
    GRPO_POLICY_BYTES_PER_LOGIT,
    RECOMPUTE_BACKWARD_FACTOR,
    REFERENCE_BYTES_PER_LOGIT,
    SFT_BYTES_PER_LOGIT,
    TRAINER_CUDA_CONTEXT_GIB,
    TRAINER_FRAGMENTATION,
    decoder_layer_inference_bytes_per_token,
    decoder_layer_saved_bytes_per_token,
    vision_forward_bytes,
)
from trainer.grpo.config import GrpoConfig
from trainer.lora import LoraSettings
from trainer.sft.config import SftConfig


def _trainer_static(shape: ModelShape, dtype_bytes: int, lora_params: int, adapters: int) -> list[MemoryItem]:
    lora_note = f"{lora_params / 1e6:.1f} M parameters, fp32 (PEFT upcasts adapters)"
    items = [
        MemoryItem("CUDA context and workspaces", TRAINER_CUDA_CONTEXT_GIB, "context, cuBLAS/cuDNN, kernels (assumed)"),
        MemoryItem(f"base weights, {dtype_name(dtype_bytes)}", gib(shape.parameters.total * dtype_bytes), "frozen"),
        MemoryItem("policy LoRA" + (" + reference LoRA" if adapters == 2 else ""), gib(adapters * lora_params * FP32),
                   lora_note),
        MemoryItem("LoRA gradients", gib(lora_params * FP32), "fp32"),
        MemoryItem("AdamW moments", gib(2 * lora_params * FP32), "exp_avg and exp_avg_sq, fp32"),
    ]  # fmt: skip
    return items


def grpo_trainer_budget(
    shape: ModelShape,
    grpo: GrpoConfig,
    lora: LoraSettings,
    has_reference: bool,
    prompt: int,
    share: float,
    share_detail: str,
) -> ProcessBudget:
    """The trainer during a GRPO step (trainer/grpo/trainer.py): groups go through one at a time, each
    forward and backward over its G sequences. The policy pass peaks either at the logits (forward
    through log-softmax and entropy, then their backward) or later, in a layer's recompute, while
    the entropy's fp32 exp(log p) is still alive (4 bytes a logit); the checkpointed hidden states
    stay throughout. The reference pass and the frozen vision tower peak on their own; each X-ray
    goes through the vision tower once per pass, its encoding shared by the group's G rows
    (trainer/logprobs.py `image_encoding`)."""
    text, vision = shape.text, shape.vision
    act = DTYPE_BYTES[grpo.dtype]
    group, max_tokens = grpo.sampling.group_size, grpo.sampling.max_tokens
    lora_params = lora_parameter_count(text, lora)
    tokens = group * (prompt + max_tokens)  # one group's sequences in one forward
    logits = group * (max_tokens + 1) * text.vocab
    pixel_elements = vision.pixel_values_elements(grpo.max_pixels)
    layer = decoder_layer_saved_bytes_per_token(
        text, activation_bytes=act, lora=lora.model_copy(update={"dropout": 0.0})
    )
    checkpoints = (
        text.layers * tokens * text.hidden * act
        if grpo.gradient_checkpointing
        else tokens * layer * text.layers
    )
    recompute = RECOMPUTE_BACKWARD_FACTOR * tokens * layer if grpo.gradient_checkpointing else 0
    final_norm = tokens * FP32 * text.hidden
    policy_logits = GRPO_POLICY_BYTES_PER_LOGIT * logits
    policy = checkpoints + final_norm + max(policy_logits, 4 * logits + recompute)
    reference = (
        tokens * decoder_layer_inference_bytes_per_token(text, act) + REFERENCE_BYTES_PER_LOGIT * logits
    )
    images = vision_forward_bytes(
        vision, images=1, patches_per_image=vision.patches(grpo.max_pixels), activation_bytes=act
    )
    peak = max(policy, reference, images)
    items = _trainer_static(shape, act, lora_params, 2 if has_reference else 1)
    items += [
        MemoryItem("X-ray batch on the GPU", gib(grpo.batch_size * pixel_elements * act),
                   f"pixel values of {grpo.batch_size} images (one per group of {group} completions)"),
        MemoryItem("activation peak, one group", gib(peak), "the largest of the passes below"),
    ]  # fmt: skip
    items.append(MemoryItem("allocator fragmentation margin", TRAINER_FRAGMENTATION * sum(i.gib for i in items[1:]),
                            f"{TRAINER_FRAGMENTATION:.0%} of the allocated peak (assumed)"))  # fmt: skip
    ckpt_label = (
        "checkpointed hidden states"
        if grpo.gradient_checkpointing
        else "all layers' activations (no checkpointing)"
    )
    breakdown = [
        MemoryItem("policy pass: " + ckpt_label, gib(checkpoints), f"{text.layers} layers x {tokens:,} tokens"),
        MemoryItem("policy pass: logits -> log-softmax, entropy", gib(policy_logits),
                   f"{group} x {max_tokens + 1} x {text.vocab:,} vocab, {GRPO_POLICY_BYTES_PER_LOGIT} bytes each"),
        MemoryItem("policy pass: one layer's recompute + grads", gib(recompute),
                   f"{layer / 1024:.0f} KiB per token x {RECOMPUTE_BACKWARD_FACTOR}"),
        MemoryItem("reference pass (no grad)", gib(reference), f"logits {REFERENCE_BYTES_PER_LOGIT} bytes each"),
        MemoryItem("vision tower forward (frozen)", gib(images), f"1 image x {vision.patches(grpo.max_pixels):,} patches"),
    ]  # fmt: skip
    return ProcessBudget(
        "trainer, GRPO step",
        items,
        share,
        share_detail,
        breakdown,
        advice=f"lower grpo.sampling.group_size or max_tokens (the logits of {group} x {max_tokens + 1} x "
        f"{text.vocab:,} vocabulary take {gib(policy_logits):.1f} GiB) or rollout.engine.gpu_memory_utilization",
    )


def sft_trainer_budget(
    shape: ModelShape, sft: SftConfig, prompt: int, target: int, share: float, share_detail: str
) -> ProcessBudget:
    """The trainer during an SFT step (trainer/sft/training.py): one micro-batch of prompt + target, logits
    over the target only, LoRA dropout on."""
    text, vision = shape.text, shape.vision
    act = DTYPE_BYTES[sft.dtype]
    batch = sft.training.per_device_batch_size
    lora_params = lora_parameter_count(text, sft.lora)
    tokens = batch * (prompt + target)
    logits = batch * (target + 1) * text.vocab
    layer = decoder_layer_saved_bytes_per_token(text, activation_bytes=act, lora=sft.lora)
    if sft.gradient_checkpointing:
        checkpoints = text.layers * tokens * text.hidden * act
        recompute = RECOMPUTE_BACKWARD_FACTOR * tokens * layer
    else:
        checkpoints, recompute = text.layers * tokens * layer, 0
    forward_backward = (
        checkpoints + tokens * FP32 * text.hidden + max(SFT_BYTES_PER_LOGIT * logits, recompute)
    )
    images = vision_forward_bytes(
        vision, images=batch, patches_per_image=vision.patches(sft.max_pixels), activation_bytes=act
    )
    peak = max(forward_backward, images)
    items = _trainer_static(shape, act, lora_params, 1)
    items += [
        MemoryItem("activation peak, one batch", gib(peak),
                   f"{batch} x ({prompt} prompt + {target} target tokens), LoRA dropout {sft.lora.dropout}"),
    ]  # fmt: skip
    items.append(MemoryItem("allocator fragmentation margin", TRAINER_FRAGMENTATION * sum(i.gib for i in items[1:]),
                            f"{TRAINER_FRAGMENTATION:.0%} of the allocated peak (assumed)"))  # fmt: skip
    breakdown = [
        MemoryItem("hidden states kept for backward", gib(checkpoints), f"{text.layers} layers x {tokens:,} tokens"),
        MemoryItem("logits -> cross-entropy", gib(SFT_BYTES_PER_LOGIT * logits), f"{batch} x {target + 1} x {text.vocab:,}"),
        MemoryItem("one layer's recompute + grads", gib(recompute), f"{layer / 1024:.0f} KiB per token"),
        MemoryItem("vision tower forward (frozen)", gib(images), f"{batch} image(s)"),
    ]  # fmt: skip
    return ProcessBudget(
        "trainer, SFT step",
        items,
        share,
        share_detail,
        breakdown,
        advice="lower sft.training.per_device_batch_size (raise gradient_accumulation_steps instead), keep "
        "sft.gradient_checkpointing on, or lower rollout.engine.gpu_memory_utilization",
    )
