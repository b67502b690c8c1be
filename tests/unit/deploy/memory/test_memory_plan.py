"""The memory plan of the shipped one-GPU configs, the KV cache arithmetic, and refusals."""

from pathlib import Path

import pytest

from deploy.architectures import MEDGEMMA_4B, QWEN25_VL_3B, model_shape, real_size_config
from deploy.config import RunConfig
from deploy.memory.estimates import kv_cache_bytes, kv_cache_bytes_per_token, kv_group_size
from deploy.memory.plan import GPU_MEMORY_GIB, plan_memory
from deploy.memory.report import format_plan
from shared.config import load_config
from shared.errors import UserError
from trainer.grpo.config import GrpoConfig
from trainer.sft.config import SftConfig

CONFIGS = Path(__file__).resolve().parents[4] / "deploy" / "configs"
SHIPPED = {"medgemma-4b-a100.yaml": MEDGEMMA_4B, "qwen2.5-vl-3b-a100.yaml": QWEN25_VL_3B}


def shipped(name: str, overrides: dict | None = None) -> RunConfig:
    return load_config(CONFIGS / name, RunConfig, overrides=overrides)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_validate_in_every_section(name):
    config = shipped(name)
    split = config.gpu_split()  # every GPU number comes from the one budget
    assert split.layout == "shared" and split.rollout_num_gpus + split.trainer_num_gpus <= 1  # co-located
    grpo = config.grpo_config(config.model, Path(config.data.rl_manifest), None)
    assert isinstance(grpo, GrpoConfig) and grpo.sampling.group_size == 4 and grpo.batch_size == 8
    assert (grpo.loss.beta, grpo.loss.clip_low, grpo.loss.clip_high) == (0.15, 0.15, 0.22)
    assert grpo.loss.normalisation == "dr_grpo"
    assert isinstance(config.sft_config(config.model, Path(config.data.sft_manifest), Path("out")), SftConfig)
    engine = config.engine_config(config.model)
    assert engine.gpu_memory_utilization == split.vllm_memory_utilization and config.model.startswith(
        "/path/to/"
    )
    if SHIPPED[name] == QWEN25_VL_3B:  # the paper's 256-512 image tokens, identical on both sides
        assert (
            (engine.min_pixels, engine.max_pixels) == (grpo.min_pixels, grpo.max_pixels) == (200704, 401408)
        )


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_fit_an_a100_80gb(name):
    plan = plan_memory(shipped(name), "a100-80gb")
    assert plan.fits and plan.overflow_message() is None and not plan.warnings
    assert plan.model.name == SHIPPED[name]
    rollout, grpo, sft = plan.processes
    weights = {item.label.split(",")[0]: item.gib for item in rollout.items}["base weights"]
    assert 6.5 < weights < 8.5  # a 3.75 B / 4.3 B model in bf16
    assert weights < rollout.need_gib < rollout.share_gib
    assert grpo.share_gib == pytest.approx(79.2 - rollout.share_gib - 0.6)
    assert sft.need_gib < grpo.need_gib < grpo.share_gib  # GRPO's G completions outweigh one SFT sample
    totals = plan.totals()
    assert totals["fits"] is True and totals["trainer_gib"] == round(grpo.need_gib, 2)
    text = format_plan(plan)
    assert "KV cache" in text and "fits" in text and "DOES NOT FIT" not in text


def test_medgemma_logits_dominate_the_trainer():
    plan = plan_memory(shipped("medgemma-4b-a100.yaml"), "a100-80gb")
    grpo = plan.process("trainer, GRPO")
    logits = next(item for item in grpo.breakdown if "logits" in item.label)
    assert logits.gib == pytest.approx(20 * 4 * 513 * 262208 / 1024**3)  # 20 bytes per fp32-path logit
    assert logits.gib > 0.8 * max(item.gib for item in grpo.items if item.label.startswith("activation"))


def test_oversized_group_is_refused_with_numbers():
    config = shipped("medgemma-4b-a100.yaml", {"grpo": {"sampling": {"group_size": 16, "max_tokens": 4096}}})
    plan = plan_memory(config, "a100-80gb")
    assert not plan.fits
    message = plan.overflow_message()
    assert message.startswith("trainer, GRPO step needs") and "GiB" in message and "group_size" in message


def test_too_small_vllm_share_is_refused():
    config = shipped("qwen2.5-vl-3b-a100.yaml", {"gpu": {"rollout_share": 0.1}})
    plan = plan_memory(config, "a100-80gb")
    assert not plan.process("rollout").fits
    assert plan.overflow_message().startswith("rollout server (vLLM) needs")


def test_a_smaller_gpu_changes_the_verdict():
    config = shipped("medgemma-4b-a100.yaml")
    assert plan_memory(config, "h100-80gb").fits
    assert not plan_memory(config, "a10g-24gb").fits


def test_cpu_demo_has_no_gpu_budget():
    plan = plan_memory(load_config(CONFIGS / "default.yaml", RunConfig), "a100-80gb")
    assert plan.processes == [] and "no GPU budget" in format_plan(plan)
    assert plan.totals()["fits"] is None


def test_unknown_gpu_and_model_are_user_errors():
    with pytest.raises(UserError, match="unknown GPU 't4'"):
        plan_memory(shipped("medgemma-4b-a100.yaml"), "t4")
    config = shipped("medgemma-4b-a100.yaml", {"model": "/models/mystery"})
    with pytest.raises(UserError, match="--arch"):
        plan_memory(config, "a100-80gb")
    assert plan_memory(config, "a100-80gb", arch=MEDGEMMA_4B).fits


def test_warnings_name_the_config_keys():
    overrides = {"rollout": {"engine": {"max_model_len": 1024, "max_num_seqs": 8, "max_pixels": None}}}
    plan = plan_memory(shipped("qwen2.5-vl-3b-a100.yaml", overrides), "a100-80gb")
    text = " | ".join(plan.warnings)
    assert "max_model_len 1024" in text and "max_num_seqs is 8" in text and "max_pixels is unset" in text
    assert "differ from rollout.engine" in text


def test_gpu_table_is_what_the_devices_report():
    for name, gib in GPU_MEMORY_GIB.items():
        marketed = int(name.split("-")[-1].removesuffix("gb"))
        assert 0.9 * marketed < gib <= marketed


def test_kv_cache_without_sliding_layers_is_per_token_times_length():
    text = model_shape(real_size_config(QWEN25_VL_3B), QWEN25_VL_3B).text
    one = kv_cache_bytes(text, sequence_tokens=1024, prompt_tokens=600, sequences=1, dtype_bytes=2)
    assert one == 1024 * kv_cache_bytes_per_token(text, 2) == 1024 * 36 * 2 * 2 * 128 * 2
    assert (
        kv_cache_bytes(text, sequence_tokens=1024, prompt_tokens=600, sequences=32, dtype_bytes=2) == 32 * one
    )


def test_gemma_hybrid_kv_cache_caps_sliding_layers_at_the_window():
    text = model_shape(real_size_config(MEDGEMMA_4B), MEDGEMMA_4B).text
    assert kv_group_size(5, 29) == 5  # 7 groups of 5 layers: 1 full, 6 sliding (one padding slot)
    page = 16 * 2 * text.kv_width * 2
    short = kv_cache_bytes(text, sequence_tokens=800, prompt_tokens=600, sequences=1, dtype_bytes=2)
    assert short == 7 * 5 * 50 * page  # under the window every group holds the whole sequence
    long = kv_cache_bytes(text, sequence_tokens=8192, prompt_tokens=600, sequences=1, dtype_bytes=2)
    assert long == 5 * (512 + 6 * 65) * page  # full group: 512 blocks; sliding: 1024/16 + 1
    assert long < 8192 * kv_cache_bytes_per_token(text, 2) / 3  # under a third of all layers holding 8k
