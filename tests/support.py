"""Helpers the tests share: encoded images, a tiny model with one phantom X-ray's prompt and the
logprobs of completions computed by hand, and (from
benchmarks/common.py, which the benchmarks use too) free ports, real server processes and random LoRA
adapters."""

import base64
import io

import numpy as np
from PIL import Image

from benchmarks.common import ServerProcess, free_port
from benchmarks.common import random_lora_model as random_adapter

__all__ = [
    "ServerProcess",
    "b64",
    "free_port",
    "noise_xray",
    "png_bytes",
    "random_adapter",
    "logprobs_by_hand",
    "tiny_model_and_prompt",
]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def noise_xray(seed: int, size: int = 256) -> Image.Image:
    values = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    return Image.fromarray(values, mode="L")


def tiny_model_and_prompt(model_dir, phantom_root):
    """A tiny model in float32 (eval mode) and the trainer's `prompt_inputs` for the first X-ray of the
    phantom MIMIC training manifest, asked with the reasoning_a prompt."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from shared.chat import render_prompt
    from shared.images import decode_xray
    from shared.manifest import read_manifest
    from shared.prompts import PromptRegistry, user_messages
    from trainer.logprobs import prompt_inputs

    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    manifest = phantom_root / "manifests" / "mimic_train.jsonl"
    record = read_manifest(manifest)[0]
    image = decode_xray(record.image_path(manifest.parent).read_bytes())
    text = render_prompt(processor, user_messages(PromptRegistry().get("reasoning_a")))
    return model, prompt_inputs(processor, text, image)


def logprobs_by_hand(model, batch, temperature):
    """log softmax(logits / T) of each completion token of a `completion_batch`, from the full logits of
    the plain transformers inputs (each row with its own copy of the pixels): what the trainer's
    logprobs are checked against."""
    import torch

    with torch.no_grad():
        logits = model(**batch.repeated_inputs(), use_cache=False).logits.float()
    steps = batch.completion_ids.shape[1]
    logits = logits[:, batch.prompt_length - 1 : batch.prompt_length - 1 + steps]
    return torch.log_softmax(logits / temperature, -1).gather(-1, batch.completion_ids[..., None])[..., 0]
