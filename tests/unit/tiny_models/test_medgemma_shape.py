"""The real-shape builder (`make-tiny-model --arch medgemma-4b-shape --layers N`): MedGemma-4B's
published widths, vocabulary and image geometry with N layers, built offline and deterministically.
The full-width build (1.6 GB a layer) runs in benchmarks/real_shape.py; here the same builder runs at
narrowed widths, with the real 262k vocabulary and 896-px, 256-token images."""

import hashlib
import subprocess
import sys

import pytest
import torch

from deploy.architectures import MEDGEMMA_4B, real_size_config
from shared.errors import UserError
from tiny_models import medgemma_shape

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_config_has_medgemma_4b_widths_with_n_layers():
    real = real_size_config(MEDGEMMA_4B)
    config = medgemma_shape.shape_config(3)
    text, vision = config.text_config, config.vision_config
    for field in (
        "hidden_size",
        "intermediate_size",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
    ):
        assert getattr(text, field) == getattr(real.text_config, field), field
    for field in ("hidden_size", "intermediate_size", "num_attention_heads", "image_size", "patch_size"):
        assert getattr(vision, field) == getattr(real.vision_config, field), field
    assert (text.vocab_size, config.mm_tokens_per_image, vision.image_size) == (262_208, 256, 896)
    assert (text.num_hidden_layers, vision.num_hidden_layers) == (3, 3)
    assert text.layer_types == ["sliding_attention", "sliding_attention", "full_attention"]
    assert config.image_token_index == 262_144 and config.boi_token_index == 255_999
    for layers in (0, 35):
        with pytest.raises(UserError, match="--layers must be 1..34"):
            medgemma_shape.shape_config(layers)


SHAPE_CONFIG = medgemma_shape.shape_config


def narrow_config(layers: int):
    """The builder's config at small widths (same vocabulary, image size and image tokens)."""
    config = SHAPE_CONFIG(layers)
    config.text_config.update(
        {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1,
         "head_dim": 32, "query_pre_attn_scalar": 32}
    )  # fmt: skip
    config.vision_config.update({"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2})
    return config


@pytest.fixture(scope="module")
def narrow_builds(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    patch.setattr(medgemma_shape, "shape_config", narrow_config)
    try:
        root = tmp_path_factory.mktemp("shape")
        for name, seed in (("a", 0), ("b", 0), ("c", 1)):
            medgemma_shape.build(root / name, seed=seed, layers=2)
    finally:
        patch.undo()
    return root


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_build_is_deterministic_for_a_seed(narrow_builds):
    weights = {name: digest(narrow_builds / name / "model.safetensors") for name in "abc"}
    assert weights["a"] == weights["b"] != weights["c"]
    assert digest(narrow_builds / "a" / "tokenizer.json") == digest(narrow_builds / "c" / "tokenizer.json")


def test_the_model_reads_896_px_images_as_256_tokens_over_262k_logits(narrow_builds):
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = narrow_builds / "a"
    processor = AutoProcessor.from_pretrained(folder)
    assert len(processor.tokenizer) == 262_145
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Findings?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=text, images=[Image.new("RGB", (1024, 700), 128)], return_tensors="pt")
    assert inputs["pixel_values"].shape[-2:] == (896, 896)
    assert int((inputs["input_ids"] == 262_144).sum()) == 256
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[-1] == 262_208 and torch.isfinite(logits).all()
    prompt = "<think>\nEnlarged heart.\n</think>"
    ids = processor.tokenizer.encode(prompt, add_special_tokens=False)
    assert max(ids) < 262_144 and processor.tokenizer.decode(ids) == prompt


def test_layers_is_refused_for_the_tiny_architectures(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cxr_rl.cli", "make-tiny-model", "--arch", "medgemma", "--layers", "2",
         "--out", str(tmp_path / "m")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "cxr-rl make-tiny-model: error: --layers applies to medgemma-4b-shape only, not --arch medgemma"
    )
