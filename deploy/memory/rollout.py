"""The rollout server's (vLLM 0.32's) side of the memory plan: what lives inside its
`gpu_memory_utilization` share."""

import math

from deploy.architectures import ModelShape, lora_parameter_count
from deploy.memory.budget import DTYPE_BYTES, MemoryItem, ProcessBudget, dtype_name, gib
from deploy.memory.estimates import (
    GIB,
    SAMPLER_BYTES_PER_LOGIT,
    VLLM_CUDA_GRAPHS_GIB,
    VLLM_DEFAULT_BATCHED_TOKENS,
    VLLM_NON_TORCH_GIB,
    decoder_layer_inference_bytes_per_token,
    kv_cache_bytes,
    kv_cache_bytes_per_token,
    vision_forward_bytes,
)
from rollout_server.config import EngineConfig
from trainer.grpo.config import GrpoConfig
from trainer.lora import LoraSettings


def rollout_budget(
    shape: ModelShape, engine: EngineConfig, grpo: GrpoConfig, prompt: int, gpu_gib: float, replicas: int
) -> ProcessBudget:
    """vLLM's items for the GRPO rollout load: every X-ray of a step (split over the replicas)
    sampled `group_size` times at once, against `gpu_memory_utilization` x the GPU."""
    text, vision = shape.text, shape.vision
    dtype_bytes = DTYPE_BYTES[engine.dtype]
    max_tokens = grpo.sampling.max_tokens
    sequences = min(math.ceil(grpo.batch_size / replicas) * grpo.sampling.group_size, engine.max_num_seqs)
    sequence_tokens = prompt + max_tokens
    kv_step = kv_cache_bytes(
        text,
        sequence_tokens=sequence_tokens,
        prompt_tokens=prompt,
        sequences=sequences,
        dtype_bytes=dtype_bytes,
    )
    kv_longest = kv_cache_bytes(
        text, sequence_tokens=engine.max_model_len, prompt_tokens=prompt, sequences=1, dtype_bytes=dtype_bytes
    )
    kv_detail = f"{sequences} sequences x {sequence_tokens:,} tokens at once"
    if text.sliding_layers:
        kv_detail += f"; hybrid KV cache: {text.sliding_layers} sliding-window layers keep <= {text.sliding_window:,} tokens"
    if kv_longest > kv_step:
        kv_detail = f"one max_model_len sequence ({engine.max_model_len:,} tokens), vLLM's start-up minimum"
    # vLLM gives every LoRA-capable projection of the language model a slot, whatever an adapter targets.
    slot_params = lora_parameter_count(text, LoraSettings(rank=engine.max_lora_rank))
    batched_tokens = VLLM_DEFAULT_BATCHED_TOKENS
    if engine.enable_chunked_prefill is False:
        batched_tokens = max(engine.max_model_len, VLLM_DEFAULT_BATCHED_TOKENS)
    image_tokens = vision.image_tokens(engine.max_pixels)
    images = max(1, min(max(batched_tokens, image_tokens) // image_tokens, engine.max_num_seqs))
    encoder = (
        vision_forward_bytes(
            vision,
            images=images,
            patches_per_image=vision.patches(engine.max_pixels),
            activation_bytes=dtype_bytes,
        )
        + images * image_tokens * text.hidden * dtype_bytes
    )
    language = batched_tokens * decoder_layer_inference_bytes_per_token(text, dtype_bytes)
    sampler = min(engine.max_num_seqs, batched_tokens) * text.vocab * SAMPLER_BYTES_PER_LOGIT
    profile = max(encoder, language + sampler)
    items = [
        MemoryItem(f"base weights, {dtype_name(dtype_bytes)}", gib(shape.parameters.total * dtype_bytes),
                   f"{shape.parameters.total:,} parameters incl. the vision tower"),
        MemoryItem(f"LoRA slots, {engine.max_loras} x rank {engine.max_lora_rank}",
                   gib(engine.max_loras * slot_params * dtype_bytes), f"{slot_params / 1e6:.1f} M parameters each"),
        MemoryItem("KV cache a GRPO step needs", gib(max(kv_step, kv_longest)), kv_detail),
        MemoryItem("profiling peak (activations)", gib(profile),
                   f"vision tower on {images} image(s) or {batched_tokens:,} tokens + sampler over {text.vocab:,} vocab"),
        MemoryItem("CUDA graphs", 0.0 if engine.enforce_eager else VLLM_CUDA_GRAPHS_GIB,
                   "enforce_eager: none" if engine.enforce_eager else "assumed; vLLM measures it at start-up"),
        MemoryItem("non-torch allocations", VLLM_NON_TORCH_GIB, "cuBLAS workspaces, attention metadata, kernels (assumed)"),
    ]  # fmt: skip
    share = engine.gpu_memory_utilization * gpu_gib
    budget = ProcessBudget(
        "rollout server (vLLM)" + (", per replica" if replicas > 1 else ""),
        items,
        share,
        f"gpu_memory_utilization {engine.gpu_memory_utilization} x {gpu_gib:.1f} GiB",
        advice="raise rollout.engine.gpu_memory_utilization, or lower grpo.batch_size, grpo.sampling.group_size "
        "or max_tokens (KV cache), or rollout.engine.max_loras",
    )
    per_sequence = max(1, kv_step // sequences)
    if budget.fits:
        spare = int((budget.headroom_gib * GIB) // per_sequence) + sequences
        budget.breakdown.append(
            MemoryItem("KV cache vLLM will allocate (the share's rest)", budget.headroom_gib + gib(max(kv_step, kv_longest)),
                       f"room for ~{spare} sequences of {sequence_tokens:,} tokens "
                       f"({kv_cache_bytes_per_token(text, dtype_bytes) / 1024:.0f} KiB per token without windows)")
        )  # fmt: skip
    return budget
