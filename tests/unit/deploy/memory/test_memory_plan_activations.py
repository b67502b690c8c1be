"""The planner's activation formulas against what autograd really keeps, at real widths, and the
GPU measurement helper run end to end on the tiny models (CPU: no peak, but the real step)."""

import math

import pytest
import torch
from transformers import AutoConfig, AutoModelForImageTextToText

from deploy.architectures import ARCHITECTURES, MEDGEMMA_4B, build_random_model, model_shape, real_size_config
from deploy.memory.estimates import decoder_layer_saved_bytes_per_token
from deploy.memory.measure import measure_grpo_step, saved_activation_bytes
from trainer.lora import LoraSettings

TOKENS = 32
CPU_DROPOUT_MASK_BYTES = 4  # off CUDA, dropout keeps a float mask


def one_layer_language_model(arch: str, dtype: torch.dtype):
    """The real-width language model of `arch` cut to one decoder layer (and a tiny vocabulary),
    allocated without initialisation (values do not change what autograd saves)."""
    config = real_size_config(arch)
    config.text_config.num_hidden_layers = 1
    config.text_config.vocab_size = 64
    if arch == MEDGEMMA_4B:
        config.text_config.layer_types = ["sliding_attention"]
    with torch.device("meta"):
        language_model = AutoModelForImageTextToText.from_config(config).model.language_model
    language_model = language_model.to_empty(device="cpu").to(dtype)
    with torch.no_grad():
        for parameter in language_model.parameters():
            parameter.normal_(0.0, 0.02)
    return language_model


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("dropout", [0.0, 0.1], ids=["grpo", "sft"])
def test_layer_formula_matches_saved_tensors(arch, dropout):
    from peft import get_peft_model

    shape = model_shape(real_size_config(arch), arch)
    lora = LoraSettings(dropout=dropout)
    peft_config = lora.peft_config()
    peft_config.task_type = None  # a bare language model has no generation head
    peft_config.target_modules = rf".*\.({'|'.join(lora.projections)})"
    language_model = one_layer_language_model(arch, torch.bfloat16)
    language_model.requires_grad_(False)
    model = get_peft_model(language_model, peft_config)
    model.train()
    hidden = torch.randn(1, TOKENS, shape.text.hidden, dtype=torch.bfloat16, requires_grad=True)

    saved = saved_activation_bytes(lambda: model(inputs_embeds=hidden, use_cache=False), model.parameters())
    final_norm = 4 * shape.text.hidden  # the model's last RMSNorm keeps its fp32 input as well
    measured = saved / TOKENS - final_norm
    estimated = decoder_layer_saved_bytes_per_token(
        shape.text, activation_bytes=2, lora=lora, dropout_mask_bytes=CPU_DROPOUT_MASK_BYTES
    )
    assert estimated == pytest.approx(measured, rel=0.05)


@pytest.mark.parametrize("fixture", ["tiny_medgemma", "tiny_qwen"])
def test_grpo_step_measurement_runs_on_the_tiny_models(fixture, request):
    folder = request.getfixturevalue(fixture)
    config = AutoConfig.from_pretrained(folder)
    model = build_random_model(config, device="cpu", dtype=torch.float32)
    image_tokens = model_shape(config, folder.name).vision.image_tokens(64 * 28 * 28)
    result = measure_grpo_step(
        model,
        config,
        group_size=2,
        prompt_tokens=image_tokens + 24,
        completion_tokens=8,
        max_pixels=64 * 28 * 28,
    )
    assert math.isfinite(result["loss"]) and result["entropy"] > 0
    assert result["lora_grad_norm"] > 0  # gradients reached the LoRA through checkpointed layers
    assert math.isnan(result["peak_allocated_gib"])  # no CUDA allocator on the CPU


@pytest.mark.gpu
def test_plan_covers_a_measured_real_size_grpo_step():
    """On a GPU machine: the planner's trainer estimate against the allocator's real peak."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from deploy.memory.trainer import TRAINER_CUDA_CONTEXT_GIB, grpo_trainer_budget
    from trainer.grpo.config import GrpoConfig

    config = real_size_config(MEDGEMMA_4B)
    shape = model_shape(config, MEDGEMMA_4B)
    grpo = GrpoConfig(model="m", rl_manifest="rl.jsonl", batch_size=1)
    prompt = 571
    planned = grpo_trainer_budget(shape, grpo, grpo.lora, True, prompt, 80.0, "")
    planned_allocated = planned.need_gib - TRAINER_CUDA_CONTEXT_GIB - planned.items[-1].gib  # no margin
    model = build_random_model(config, device="cuda")
    measured = measure_grpo_step(
        model, config, group_size=grpo.sampling.group_size, prompt_tokens=prompt,
        completion_tokens=grpo.sampling.max_tokens,
    )  # fmt: skip
    assert measured["peak_allocated_gib"] <= planned_allocated <= 1.35 * measured["peak_allocated_gib"]
