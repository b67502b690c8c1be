"""Real-size architecture facts: exact parameter counts from the meta device, and the LoRA size
formula the planner uses checked against what PEFT creates."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForImageTextToText

from deploy.architectures import (
    ARCHITECTURES,
    MEDGEMMA_4B,
    QWEN25_VL_3B,
    lora_parameter_count,
    meta_model,
    model_shape,
    peft_lora_parameter_count,
    real_size_config,
    resolve_model_config,
)
from shared.errors import UserError
from trainer.lora import LoraSettings

# The published sizes of google/medgemma-4b-it and Qwen/Qwen2.5-VL-3B-Instruct (safetensors metadata).
PUBLISHED_PARAMETERS = {MEDGEMMA_4B: 4_300_079_472, QWEN25_VL_3B: 3_754_622_976}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_meta_count_matches_the_published_checkpoint(arch):
    shape = model_shape(real_size_config(arch), arch)
    counts = shape.parameters
    assert counts.total == PUBLISHED_PARAMETERS[arch]
    assert counts.total == counts.language_model + counts.vision_tower + counts.projector
    assert counts.vision_tower > 0 and counts.projector > 0
    # bf16 weights of a "4B" model are about 8 GiB
    assert 6.5 < counts.total * 2 / 1024**3 < 8.5


def test_shapes_carry_the_attention_layout():
    gemma = model_shape(real_size_config(MEDGEMMA_4B), MEDGEMMA_4B).text
    assert (gemma.layers, gemma.sliding_layers, gemma.sliding_window) == (34, 29, 1024)  # 5 local : 1 global
    assert (gemma.kv_width, gemma.q_width) == (1024, 2048)
    qwen = model_shape(real_size_config(QWEN25_VL_3B), QWEN25_VL_3B)
    assert qwen.text.sliding_layers == 0 and qwen.text.sliding_window is None
    assert qwen.vision.image_tokens(512 * 28 * 28) == 512
    assert qwen.vision.patches(512 * 28 * 28) == 2048


@pytest.mark.parametrize("fixture", ["tiny_medgemma", "tiny_qwen"])
@pytest.mark.parametrize(
    "lora",
    [LoraSettings(), LoraSettings(rank=8, projections=("q_proj", "v_proj", "down_proj"))],
    ids=["all", "some"],
)
def test_lora_formula_matches_peft_on_the_tiny_models(fixture, lora, request):
    folder = request.getfixturevalue(fixture)
    config = AutoConfig.from_pretrained(folder)
    shape = model_shape(config, folder.name)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
    assert shape.parameters.total == sum(p.numel() for p in model.parameters())
    assert lora_parameter_count(shape.text, lora) == peft_lora_parameter_count(model, lora)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_lora_formula_matches_peft_on_the_real_size_meta_model(arch):
    config = real_size_config(arch)
    shape = model_shape(config, arch)
    lora = LoraSettings()
    assert lora_parameter_count(shape.text, lora) == peft_lora_parameter_count(meta_model(config), lora)


def test_unknown_projection_is_refused():
    shape = model_shape(real_size_config(QWEN25_VL_3B), QWEN25_VL_3B)
    with pytest.raises(UserError, match="fc1"):
        lora_parameter_count(shape.text, LoraSettings(projections=("q_proj", "fc1")))


def test_model_resolution(tiny_medgemma):
    name, config = resolve_model_config("/models/google/medgemma-4b-it")
    assert name == MEDGEMMA_4B and config.model_type == "gemma3"
    assert resolve_model_config("Qwen/Qwen2.5-VL-3B-Instruct")[0] == QWEN25_VL_3B
    assert resolve_model_config("/anything", arch=QWEN25_VL_3B)[0] == QWEN25_VL_3B
    name, config = resolve_model_config(str(tiny_medgemma))
    assert name == tiny_medgemma.name and config.text_config.num_hidden_layers == 2
    with pytest.raises(UserError, match="cannot tell the architecture"):
        resolve_model_config("/models/llama-3-8b")
    with pytest.raises(UserError, match="unknown architecture"):
        real_size_config("gemma-27b")
