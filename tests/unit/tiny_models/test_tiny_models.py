"""Tiny models of the real architectures: deterministic, small, cached, loadable by transformers."""

import hashlib
import subprocess
import sys

import numpy as np
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
        == "cxr-rl make-tiny-model: error: unknown --arch 'llama'; choose one of medgemma, qwen2.5-vl, medgemma-4b-shape"
    )


@pytest.fixture(scope="module")
def probe_phantoms(tmp_path_factory):
    from dataprep.phantoms.datasets import make_phantoms

    root = tmp_path_factory.mktemp("probe-phantoms")
    make_phantoms(root, n=PROBE_PHANTOMS, seed=0)
    return root


PROBE_PHANTOMS = 300


@pytest.mark.parametrize("arch", ["medgemma", "qwen2.5-vl"])
def test_two_different_xrays_reach_the_language_model_differently(arch, request, probe_phantoms):
    """transformers leaves Gemma3's projector at zero: every image would become the same tokens."""
    from shared.manifest import read_manifest
    from tiny_models.probe import image_features

    model = request.getfixturevalue("tiny_medgemma" if arch == "medgemma" else "tiny_qwen")
    manifest = probe_phantoms / "manifests" / "mimic_train.jsonl"
    records = read_manifest(manifest)
    clear = next(r for r in records if r.labels == ["No Finding"])
    sick = next(r for r in records if "Pleural Effusion" in r.labels)
    features = image_features(model, [r.image_path(manifest.parent).read_bytes() for r in (clear, sick)])
    scale = float(np.abs(features).mean())  # MedGemma ~0.76, Qwen ~0.06 (its embeddings are unscaled)
    assert float(np.abs(features[0] - features[1]).mean()) > 0.1 * scale > 0  # measured 0.30 and 0.47


def test_a_linear_probe_on_the_tiny_medgemmas_image_features_beats_the_seen_label_baseline(
    tiny_medgemma, probe_phantoms, one_torch_thread
):
    """The model sees the phantoms' findings: measured 0.43 probe vs 0.26 baseline macro-F1 (300
    phantoms); a blind model scores 0.05 (every image predicted alike). And what it sees differs
    between images in most of the features' length (a randomly drawn projector: 7%, the films
    then reach the language model as near-identical tokens; fitted to phantom films: 72%)."""
    from tiny_models.probe import phantom_probe

    report = phantom_probe(tiny_medgemma, probe_phantoms, seed=0)
    print(report.model_dump_json())
    assert report.distinct_features == report.n_train + report.n_held_out + report.n_ood
    assert report.probe_macro_f1 > report.baseline_macro_f1 + 0.08
    assert report.between_image_share > 0.5


def test_a_model_from_an_older_builder_is_rebuilt(tmp_path):
    import json

    from safetensors.torch import load_file

    from tiny_models import BUILDER_VERSION, STAMP

    folder = build_tiny_model("medgemma", tmp_path / "m", seed=0)
    stamp = json.loads((folder / STAMP).read_text())
    (folder / STAMP).write_text(json.dumps({**stamp, "builder_version": BUILDER_VERSION - 1}))
    (folder / "model.safetensors").write_bytes(b"old")
    build_tiny_model("medgemma", folder, seed=0)
    assert json.loads((folder / STAMP).read_text())["builder_version"] == BUILDER_VERSION
    projector = load_file(folder / "model.safetensors")["multi_modal_projector.mm_input_projection_weight"]
    assert projector.abs().mean() > 0.05
