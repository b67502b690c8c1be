"""The sync benchmark's own parts: MedGemma-4B's shape counted on the meta device, the adapter sink
that stands in for a replica's pre-vLLM work, and the figures it prints."""

import json

import pytest
import torch
from safetensors.torch import save as save_safetensors

from benchmarks._adapter_sink import AdapterSink
from benchmarks._medgemma_4b import PUBLISHED_PARAMETERS, medgemma_4b_shape, synthetic_lora_state
from benchmarks.sync import milliseconds, parse_args
from rollout_server.errors import RequestError
from shared.schemas import AdapterUpdate

Q_PROJ = "base_model.model.model.language_model.layers.0.self_attn.q_proj"


def expected_lora_parameters(rank: int) -> int:
    """r x (in + out) for q/k/v/o/gate/up/down of every text layer, from the config's numbers."""
    from deploy.architectures import MEDGEMMA_4B, real_size_config

    text = real_size_config(MEDGEMMA_4B).text_config
    hidden, inter, head = text.hidden_size, text.intermediate_size, text.head_dim
    q_out, kv_out = text.num_attention_heads * head, text.num_key_value_heads * head
    projections = [
        (hidden, q_out), (hidden, kv_out), (hidden, kv_out), (q_out, hidden),
        (hidden, inter), (hidden, inter), (inter, hidden),
    ]  # fmt: skip
    return text.num_hidden_layers * sum(rank * (n_in + n_out) for n_in, n_out in projections)


def test_medgemma_4b_is_counted_exactly_and_its_lora_has_the_trainers_shape():
    shape = medgemma_4b_shape(rank=16)
    assert shape.parameters == PUBLISHED_PARAMETERS  # the config is the published checkpoint's
    assert shape.language_model_parameters < shape.parameters
    assert shape.lora_parameters == expected_lora_parameters(16) == 29_802_496
    assert len(shape.lora_tensors) == 34 * 7 * 2  # A and B of 7 projections in 34 layers
    assert {dtype for _, dtype in shape.lora_tensors.values()} == {torch.float32}
    assert shape.lora_tensors[f"{Q_PROJ}.lora_A.weight"][0] == (16, 2560)
    assert shape.lora_tensors[f"{Q_PROJ}.lora_B.weight"][0] == (2048, 16)
    assert not any("vision" in name for name in shape.lora_tensors)
    assert shape.adapter_config["r"] == 16 and "language_model" in shape.adapter_config["target_modules"]
    state = synthetic_lora_state(shape, seed=0)
    assert sum(t.numel() for t in state.values()) == shape.lora_parameters
    assert len(save_safetensors(state)) > 4 * shape.lora_parameters  # float32 values plus a header


def small_update(version: int, name: str = Q_PROJ, rank: int = 2) -> AdapterUpdate:
    tensors = {
        f"{name}.lora_A.weight": torch.randn(rank, 8),
        f"{name}.lora_B.weight": torch.randn(8, rank),
    }
    return AdapterUpdate(
        name="bench",
        version=version,
        safetensors=save_safetensors(tensors),
        adapter_config={"r": rank, "lora_alpha": 2 * rank, "target_modules": r".*language_model.*\.(q_proj)"},
    )


@pytest.fixture()
def sink():
    sink = AdapterSink(max_rank=4)
    yield sink
    sink.stop()
    assert not sink.adapter_dir.exists()


def test_the_sink_writes_each_version_and_keeps_only_the_latest(sink):
    first, second = small_update(0), small_update(1)
    info = sink.load_adapter(first)
    assert (info.name, info.version, info.rank) == ("bench", 0, 2)
    sink.load_adapter(second)
    folders = sorted(p.name for p in (sink.adapter_dir / "bench").iterdir())
    assert folders == ["v1"]  # v0 dropped, no staging folder left behind
    written = sink.adapter_dir / "bench" / "v1"
    assert (written / "adapter_model.safetensors").read_bytes() == second.safetensors
    assert json.loads((written / "adapter_config.json").read_text()) == second.adapter_config
    loads = sink.stats()
    assert len(loads) == 2 and all(load["total_s"] >= load["write_s"] + load["check_s"] for load in loads)


def test_the_sink_refuses_what_the_rollout_server_refuses(sink):
    with pytest.raises(RequestError, match="vision"):
        sink.load_adapter(small_update(0, name="base_model.model.model.vision_tower.layers.0.q_proj"))
    with pytest.raises(RequestError, match="rank 8"):
        sink.load_adapter(small_update(0, rank=8))


def test_milliseconds_reports_median_and_nearest_rank_p95():
    figures = milliseconds([i / 1000 for i in range(1, 21)])  # 1..20 ms
    assert figures == {"p50": 10.5, "p95": 19.0, "mean": 10.5}


@pytest.mark.parametrize(
    "argv", [["--skip-tiny", "--skip-4b"], ["--publishes", "0"], ["--warmup", "-1"], ["--rank", "0"]]
)
def test_parse_args_refuses_runs_that_measure_nothing(argv):
    with pytest.raises(SystemExit):
        parse_args(argv)
