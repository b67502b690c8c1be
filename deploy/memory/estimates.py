"""Byte formulas behind `cxr-rl plan-memory`: the KV cache as vLLM 0.32 pages it, and the activations
the trainer's autograd keeps, each from a model's widths. Pure arithmetic, no torch.

The trainer's per-layer figure was derived op by op from transformers' Gemma 3 and Qwen2.5-VL
decoder layers with a PEFT LoRA and checked against what autograd actually saves (a test counts
the saved tensors of real-width layers); see `decoder_layer_saved_bytes_per_token`.

Every constant of the plan that no formula gives lives here, in one of two groups: read from the
code of vLLM, PyTorch or our trainer (and checked on the CPU where a test can), or an unmeasured
assumption. `UNMEASURED` names the second group; `benchmarks/gpu_memory.py` measures the trainer's
(context, fragmentation, activation peaks) on a GPU, nothing here has measured vLLM's yet.
"""

from deploy.architectures import TextShape, VisionShape
from trainer.lora import LoraSettings

GIB = 1024**3
FP32 = 4

# ---- Read from the code (vLLM 0.32, PyTorch, trainer/logprobs.py, trainer/sft/training.py) --------------------
VLLM_BLOCK_SIZE = 16  # tokens per KV block (vLLM's default on CUDA)
# vLLM's token budget per step with chunked prefill on (the default for AsyncLLM's usage context);
# the profiling run pushes this many tokens, and as many images as it holds, through the model.
VLLM_DEFAULT_BATCHED_TOKENS = 2048
# autograd keeps dropout's mask: a bool per element from CUDA's fused kernel (a float on CPU)
CUDA_DROPOUT_MASK_BYTES = 1
# Bytes per logit while the trainer turns logits into token log-probabilities (trainer/logprobs.py):
# GRPO's first update keeps the bf16 logits, their fp32 copy, the fp32 log-softmax, and for the
# entropy exp(log p) and the product (2+4+4+4+4 = 18 forward); the backward holds the saved
# log-softmax and exp, the scattered fp32 gradient, log_softmax's temporary and its result (20).
GRPO_POLICY_BYTES_PER_LOGIT = 20
REFERENCE_BYTES_PER_LOGIT = 10  # no grad: bf16 logits, fp32 copy, fp32 log-softmax
SFT_BYTES_PER_LOGIT = 16  # cross-entropy: saved log-softmax, its gradient, a temporary and the result
# vLLM's sampler on its profiling batch: fp32 logits, probabilities, the top-p sort (values and
# int64 indices) and the log-probabilities we ask for, per vocabulary entry and sequence.
SAMPLER_BYTES_PER_LOGIT = 24

# ---- Unmeasured assumptions (no GPU run has checked these yet) -------------------------------------
# vLLM snapshots free memory after creating its CUDA context, so the context lies outside its share.
VLLM_CUDA_CONTEXT_GIB = 0.6
# Inside vLLM's share, outside torch: cuBLAS workspaces, attention metadata, lazily loaded kernels
# (start-up logs quoted in vLLM's issues report 0.15-0.35 GiB of "non_torch_memory").
VLLM_NON_TORCH_GIB = 0.4
# CUDA graphs (when enforce_eager is off): vLLM measures them at start-up and takes them from the KV
# cache; with LoRA it captures each batch size twice (with and without adapters).
VLLM_CUDA_GRAPHS_GIB = 1.0
# The trainer's CUDA context plus cuBLAS/cuDNN workspaces and the kernels PyTorch loads; outside
# the caching allocator, so outside the trainer's cap (torch.cuda.set_per_process_memory_fraction).
TRAINER_CUDA_CONTEXT_GIB = 0.8
# PyTorch's caching allocator rounds blocks and fragments as sequence lengths change every step
# (PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True keeps this lower).
TRAINER_FRAGMENTATION = 0.10
# One checkpointed layer's backward holds its recomputed activations plus the gradients flowing
# through them; the largest gradients (MLP-wide) add about half again.
RECOMPUTE_BACKWARD_FACTOR = 1.5
UNMEASURED = (
    "VLLM_CUDA_CONTEXT_GIB",
    "VLLM_NON_TORCH_GIB",
    "VLLM_CUDA_GRAPHS_GIB",
    "TRAINER_CUDA_CONTEXT_GIB",
    "TRAINER_FRAGMENTATION",
    "RECOMPUTE_BACKWARD_FACTOR",
)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def kv_group_size(full_layers: int, sliding_layers: int) -> int:
    """Layers per KV cache group in vLLM's hybrid allocator (kv_cache_utils.py,
    `_get_kv_cache_groups_uniform_page_size`): the smaller count, unless the two are within 1.5x."""
    small, large = sorted((full_layers, sliding_layers))
    return large if large < small * 1.5 else small


def kv_cache_bytes(
    text: TextShape,
    *,
    sequence_tokens: int,
    prompt_tokens: int,
    sequences: int,
    dtype_bytes: int,
    block_size: int = VLLM_BLOCK_SIZE,
) -> int:
    """KV cache `sequences` concurrent sequences of `sequence_tokens` tokens occupy in vLLM 0.32.

    With sliding-window and full-attention layers (Gemma 3), vLLM's hybrid KV cache manager (on by
    default on GPUs) splits the layers into groups of equal size (padding the last group of a
    kind), all drawing blocks of `group size` layers from one pool; a sliding-window group holds at
    most the window (plus one block, or the whole prompt while it is prefilled), a full-attention
    group the whole sequence. Without sliding layers every layer holds the whole sequence.
    """
    page = block_size * 2 * text.kv_width * dtype_bytes  # K and V of one block in one layer
    blocks = cdiv(sequence_tokens, block_size)
    full_layers = text.layers - text.sliding_layers
    if not text.sliding_layers or not full_layers or text.sliding_window is None:
        return sequences * blocks * text.layers * page
    group = kv_group_size(full_layers, text.sliding_layers)
    sliding_blocks = min(blocks, cdiv(max(text.sliding_window, prompt_tokens), block_size) + 1)
    blocks_per_sequence = (
        cdiv(full_layers, group) * blocks + cdiv(text.sliding_layers, group) * sliding_blocks
    )
    return sequences * blocks_per_sequence * group * page


def kv_cache_bytes_per_token(text: TextShape, dtype_bytes: int) -> int:
    return 2 * text.kv_width * dtype_bytes * text.layers


def decoder_layer_saved_bytes_per_token(
    text: TextShape,
    *,
    activation_bytes: int,
    lora: LoraSettings,
    lora_bytes: int = FP32,
    dropout_mask_bytes: int = CUDA_DROPOUT_MASK_BYTES,
) -> int:
    """Bytes autograd keeps per token for one decoder layer with a frozen base and a trainable LoRA.

    Frozen base projections keep nothing (their weight gradient is never needed); what stays is:
    each RMSNorm's fp32 upcast of its input; Gemma 3's per-head q/k norms (fp32); SDPA's query,
    key, value and output; the MLP's gate, activation and up outputs; and the input each LoRA's
    A matrix multiplies. PEFT keeps LoRA weights in fp32 and casts each module's input to fp32 on
    its own (so q, k and v each keep a copy); with dropout each keeps its dropped-out input and mask.
    """
    h, q, kv, i = text.hidden, text.q_width, text.kv_width, text.intermediate
    norms = text.hidden_norms_per_layer * FP32 * h
    qk_norms = FP32 * (q + kv) if text.qk_norm else 0
    attention = activation_bytes * (2 * q + 2 * kv)
    mlp = activation_bytes * 3 * i
    widths = text.projection_widths()
    targeted = [name for name in lora.projections if name in widths]
    if lora.dropout > 0:
        lora_inputs = sum((lora_bytes + dropout_mask_bytes) * widths[name][0] for name in targeted)
    elif lora_bytes != activation_bytes:
        lora_inputs = sum(lora_bytes * widths[name][0] for name in targeted)
    else:  # no cast: projections reading the same tensor share it
        shared_inputs = {_input_of(name): widths[name][0] for name in targeted}
        lora_inputs = lora_bytes * sum(shared_inputs.values())
    return norms + qk_norms + attention + mlp + lora_inputs


def _input_of(projection: str) -> str:
    return {
        "q_proj": "attn_in",
        "k_proj": "attn_in",
        "v_proj": "attn_in",
        "gate_proj": "mlp_in",
        "up_proj": "mlp_in",
    }.get(projection, projection)


def decoder_layer_inference_bytes_per_token(text: TextShape, activation_bytes: int) -> int:
    """Live bytes per token inside one decoder layer without autograd (freed layer by layer):
    residual and normed hidden state, q/k/v and attention output, fused gate-up and its product,
    plus the fp32 working copies of the RMSNorms."""
    h, q, kv, i = text.hidden, text.q_width, text.kv_width, text.intermediate
    return activation_bytes * (2 * h + 2 * q + 2 * kv + 3 * i) + 2 * FP32 * h


def vision_forward_bytes(
    vision: VisionShape, *, images: int, patches_per_image: int, activation_bytes: int
) -> int:
    """Peak of a frozen vision tower's forward (nothing kept for backward): per patch the residual,
    the normed input, q/k/v and attention output, or the residual, normed input and both MLP-wide
    tensors, whichever is larger (fused attention: no patch x patch scores)."""
    d, i = vision.hidden, vision.intermediate
    per_patch = activation_bytes * max(6 * d, 2 * d + 2 * i)
    return images * patches_per_image * per_patch
