"""The CPU LoRA ops the rollout server puts in vLLM's place compute what vLLM's own CPU ops compute
(float32, 1e-5), for one adapter in the batch, for several, and for the prefill path's per-sequence
indices; a token with no adapter gets no LoRA delta."""

import pytest
import torch

from rollout_server import cpu_lora

vllm_ops = pytest.importorskip("vllm.lora.ops.torch_ops.lora_ops")
TOKENS, HIDDEN, RANK, OUT, SLOTS = 37, 48, 8, 40, 3


def weights(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))


@pytest.mark.parametrize("indices", [[1] * TOKENS, [0, 2] * (TOKENS // 2) + [1]], ids=["one", "mixed"])
def test_shrink_and_expand_match_vllms_ops(indices):
    indices = torch.tensor(indices)
    x, a, b = weights(TOKENS, HIDDEN), weights(SLOTS, 1, RANK, HIDDEN), weights(SLOTS, 1, OUT, RANK)
    theirs, ours = torch.zeros(TOKENS, RANK), torch.zeros(TOKENS, RANK)
    vllm_ops.bgmv_shrink(x, a, theirs, indices, 0.5)
    cpu_lora.bgmv_shrink(x, a, ours, indices, 0.5)
    assert torch.allclose(ours, theirs, atol=1e-5)
    base = weights(TOKENS, OUT + 8)
    theirs_out, ours_out = base.clone(), base.clone()
    vllm_ops.bgmv_expand_slice(theirs, b, theirs_out, indices, 4, OUT, True)
    cpu_lora.bgmv_expand_slice(ours, b, ours_out, indices, 4, OUT, True)
    assert torch.allclose(ours_out, theirs_out, atol=1e-5)
    theirs_out, ours_out = base[:, :OUT].clone(), base[:, :OUT].clone()
    vllm_ops.bgmv_expand(theirs, b, theirs_out, indices, True)
    cpu_lora.bgmv_expand(ours, b, ours_out, indices, True)
    assert torch.allclose(ours_out, theirs_out, atol=1e-5)


def test_the_prefill_path_repeats_each_sequences_adapter_over_its_tokens():
    seq_lens, slots = torch.tensor([10, 20, 7]), torch.tensor([2, 0, 2])
    x, a = weights(TOKENS, HIDDEN), weights(SLOTS, 1, RANK, HIDDEN)
    starts = torch.cumsum(seq_lens, 0) - seq_lens
    theirs, ours = torch.zeros(TOKENS, RANK), torch.zeros(TOKENS, RANK)
    meta = (starts, seq_lens, slots, 3, 20, TOKENS)
    vllm_ops.sgmv_shrink(x, a, theirs, *meta, 1.0)
    cpu_lora.sgmv_shrink(x, a, ours, *meta, 1.0)
    assert torch.allclose(ours, theirs, atol=1e-5)
    b, base = weights(SLOTS, 1, OUT, RANK), weights(TOKENS, OUT + 8)
    theirs_out, ours_out = base.clone(), base.clone()
    vllm_ops.sgmv_expand_slice(theirs, b, theirs_out, *meta, 4, OUT, True)
    cpu_lora.sgmv_expand_slice(ours, b, ours_out, *meta, 4, OUT, True)
    assert torch.allclose(ours_out, theirs_out, atol=1e-5)
    theirs_out, ours_out = base[:, :OUT].clone(), base[:, :OUT].clone()
    vllm_ops.sgmv_expand(theirs, b, theirs_out, *meta, True)
    cpu_lora.sgmv_expand(ours, b, ours_out, *meta, True)
    assert torch.allclose(ours_out, theirs_out, atol=1e-5)


def test_a_token_without_adapter_gets_no_delta():
    indices = torch.tensor([-1, 1, -1, 1])
    x, a = weights(4, HIDDEN), weights(SLOTS, 1, RANK, HIDDEN)
    out = torch.zeros(4, RANK)
    cpu_lora.bgmv_shrink(x, a, out, indices, 1.0)
    assert torch.equal(out[0], torch.zeros(RANK)) and torch.equal(out[2], torch.zeros(RANK))
    assert torch.allclose(out[1], x[1] @ a[1, 0].t(), atol=1e-5)


def test_install_replaces_vllms_cpu_ops_where_the_model_runs():
    import vllm.lora.punica_wrapper.punica_cpu as punica_cpu

    saved = {name: getattr(punica_cpu, name) for name in cpu_lora.OPS if hasattr(punica_cpu, name)}
    saved_ops = {name: getattr(vllm_ops, name) for name in cpu_lora.OPS}
    try:
        said = cpu_lora.install()
        assert "one matrix product" in said
        assert punica_cpu.sgmv_shrink is cpu_lora.sgmv_shrink and vllm_ops.bgmv_expand is cpu_lora.bgmv_expand
    finally:
        for name, function in saved.items():
            setattr(punica_cpu, name, function)
        for name, function in saved_ops.items():
            setattr(vllm_ops, name, function)


def test_the_server_runs_vllms_cpu_worker_with_these_ops_unless_told_otherwise():
    from vllm.utils.import_utils import resolve_obj_by_qualname
    from vllm.v1.worker.cpu_worker import CPUWorker

    from rollout_server.config import EngineConfig
    from rollout_server.engine import engine_args, worker_class

    grouped = engine_args(EngineConfig(model="unused")).worker_cls  # the default, on this CPU machine
    worker = resolve_obj_by_qualname(grouped)
    assert issubclass(worker, CPUWorker) and callable(worker.cxr_rl_lora_ops)
    theirs = resolve_obj_by_qualname(
        engine_args(EngineConfig(model="unused", cpu_lora_ops="vllm")).worker_cls
    )
    assert issubclass(theirs, CPUWorker) and not hasattr(theirs, "cxr_rl_lora_ops")  # vLLM's ops, our wait
    assert worker_class(EngineConfig(model="unused"), on_cpu=False) == "auto"  # GPU: vLLM's own worker
