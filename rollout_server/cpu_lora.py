"""LoRA on vLLM's CPU backend as one matrix product per adapter in the batch.

vLLM 0.32's CPU LoRA ops (`vllm/lora/ops/torch_ops/lora_ops.py`, used by `PunicaWrapperCPU`)
gather each token's own copy of its adapter's weights, `weights[indices]` -> [tokens, out, in],
then take a batched matrix-vector product per token (`einsum("bi, boi -> bo")`). The V1 engine
runs every step through the prefill path (`sgmv_*`: the indices repeated per token), so a step of
thousands of prompt tokens copies every LoRA matrix once per token, for each of the 7 projections
(q/k/v/o/gate/up/down, A and B) of every layer. On the tiny MedGemma that made serving the adapter
0.62x the merged weights' speed; with these ops it is 0.95x (`python benchmarks/rollout.py
--batch-sizes 32 --repeats 3 --skip-hf --skip-swaps --skip-openai --cpu-lora-ops vllm`, then
`grouped`; op by op: `python benchmarks/cpu_lora_ops.py`).

A GRPO batch is sampled by one adapter version (two while the next version is published), so the
tokens fall into one or two groups: here each group is one [tokens, in] x [in, out] product. The
numbers are the same sums (float32: within 1e-5 of vLLM's ops, tests/unit/rollout_server). Tokens with no adapter (index -1)
get no LoRA delta, as vLLM's GPU kernels skip them; vLLM's CPU ops index the last slot instead.

`install()` puts these functions in place of vLLM's, in the process that runs the model (the
engine's worker: `rollout_server.cpu_worker`, which the server names as vLLM's `worker_cls`
on CPU when `EngineConfig.cpu_lora_ops` is "grouped"), for the vLLM version they were written
against; elsewhere it changes nothing and says so.
"""

from typing import Any

import torch

WRITTEN_FOR = "0.32."  # vLLM's CPU LoRA ops these replace, signature for signature
OPS = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice", "sgmv_shrink", "sgmv_expand", "sgmv_expand_slice")


def lora_products(
    inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """[tokens, out]: row t is inputs[t] @ weights[indices[t]].T, zero where indices[t] < 0.

    weights: [slots, out, in] or [slots, 1, out, in] (vLLM's stacked LoRA A or B)."""
    if weights.dim() == 4:
        weights = weights.squeeze(1)
    inputs = inputs.to(dtype)
    if indices.numel() and int(indices.min()) == int(indices.max()) >= 0:  # one adapter: the usual batch
        return inputs @ weights[int(indices[0])].to(dtype).t()
    out = inputs.new_zeros((inputs.shape[0], weights.shape[-2]))
    for slot in torch.unique(indices).tolist():
        if slot >= 0:
            rows = indices == slot
            out[rows] = inputs[rows] @ weights[slot].to(dtype).t()
    return out


def bgmv_shrink(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    scaling: float = 1.0,
) -> None:
    outputs = lora_products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs


def bgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    add_inputs: bool = True,
) -> None:
    outputs = lora_products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1
    common = min(outputs.shape[1], output_tensor.shape[1])  # the adapter and model may pad differently
    if add_inputs:
        output_tensor[:, :common] += outputs[:limit, :common]
    else:
        output_tensor[:, :common] = outputs[:limit, :common]


def bgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = True,
) -> None:
    outputs = lora_products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += outputs
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = outputs


def sgmv_shrink(
    inputs: torch.Tensor,
    lora_a_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    scaling: float,
) -> None:
    per_token = torch.repeat_interleave(lora_indices_tensor, seq_len_tensor)
    bgmv_shrink(inputs, lora_a_weights, output_tensor, per_token, scaling)


def sgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    add_inputs: bool = False,
) -> None:
    per_token = torch.repeat_interleave(lora_indices_tensor, seq_len_tensor)
    bgmv_expand(inputs, lora_b_weights, output_tensor, per_token, add_inputs)


def sgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = False,
) -> None:
    per_token = torch.repeat_interleave(lora_indices_tensor, seq_len_tensor)
    bgmv_expand_slice(inputs, lora_b_weights, output_tensor, per_token, slice_offset, slice_size, add_inputs)


def install() -> str:
    """Use these ops in vLLM's CPU LoRA path of this process; returns what was done, in words."""
    # vLLM (seconds to import) loads where the engine runs; the ops above need only torch
    import vllm
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return f"vLLM's own LoRA kernels ({current_platform.device_name}): left as they are"
    if not vllm.__version__.startswith(WRITTEN_FOR):
        return f"vLLM {vllm.__version__}: its CPU LoRA ops left as they are (these were written for {WRITTEN_FOR}x)"
    # the modules that hold vLLM's CPU LoRA ops by name (loaded by the engine already)
    import vllm.lora.ops.torch_ops as package
    import vllm.lora.ops.torch_ops.lora_ops as ops
    import vllm.lora.punica_wrapper.punica_cpu as punica_cpu

    replacements: dict[str, Any] = {name: globals()[name] for name in OPS}
    for module in (ops, package, punica_cpu):  # each imported the functions by name
        for name, function in replacements.items():
            if hasattr(module, name):
                setattr(module, name, function)
    return "vLLM's CPU LoRA ops: one matrix product per adapter in the batch (rollout_server/cpu_lora.py)"
