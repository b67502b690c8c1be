"""Tiny models of the real architectures: deterministic, small, cached, loadable by transformers."""

import hashlib
import subprocess
import sys

import pytest
import torch

from tiny_models import build_tiny_model


def digest(folder):
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.parametrize("arch", ["medgemma", "qwen2.5-vl"])
def test_deterministic_small_and_cached(arch, tmp_path):
    first = build_tiny_model(arch, tmp_path / "a", seed=3)
    again = build_tiny_model(arch, tmp_path / "b", seed=3)
    other = build_tiny_model(arch, tmp_path / "c", seed=4)
    assert digest(first) == digest(again) != digest(other)
    assert sum(path.stat().st_size for path in first.iterdir()) < 5_000_000
    stamp_time = (first / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_model(arch, first, seed=3) == first  # reused, not rebuilt
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp_time


def test_medgemma_has_the_hub_layout_and_runs_in_transformers(tiny_medgemma):
    from safetensors import safe_open
    from transformers import AutoModelForImageTextToText, AutoProcessor

    with safe_open(str(tiny_medgemma / "model.safetensors"), "pt") as tensors:
        keys = list(tensors.keys())
    assert any(key.startswith("vision_tower.vision_model.") for key in keys)  # what vLLM 0.32 expects
    processor = AutoProcessor.from_pretrained(tiny_medgemma)
    vocab = processor.tokenizer.get_vocab()
    assert all(newline in vocab for newline in ("\n", "\n\n", "\n\n\n", "\n\n\n\n"))  # vLLM's Gemma3 lookups
    model = AutoModelForImageTextToText.from_pretrained(tiny_medgemma, dtype=torch.float32)
    assert type(model).__name__ == "Gemma3ForConditionalGeneration"
    assert model.config.text_config.head_dim == 64  # vLLM's CPU attention rejects 16


def test_qwen_runs_in_transformers(tiny_qwen):
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_qwen)
    model = AutoModelForImageTextToText.from_pretrained(tiny_qwen, dtype=torch.float32)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Findings?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[Image.new("RGB", (256, 256), 128)], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[-1] == model.config.text_config.vocab_size and torch.isfinite(logits).all()


def test_unknown_arch_is_one_line_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cxr_rl.cli", "make-tiny-model", "--arch", "llama", "--out", str(tmp_path / "m")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == "cxr-rl make-tiny-model: error: unknown --arch 'llama'; choose one of medgemma, qwen2.5-vl"
    )
