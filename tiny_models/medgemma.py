"""A random-weight model of MedGemma-4B's architecture (Gemma3ForConditionalGeneration: SigLIP
tower + projector + Gemma3 text), small enough to run in tests on a CPU, saved in the hub layout
that both transformers and vLLM load."""

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessor,
    Gemma3Processor,
    Gemma3TextConfig,
    SiglipVisionConfig,
)

from tiny_models.embeddings import EMBEDDING_STD, scale_embeddings
from tiny_models.perturb import perturb_constant_vectors
from tiny_models.tokenizer import train_sentencepiece_like, wrap

# Gemma 3's chat template, as the real checkpoints ship it (system text joins the first user turn).
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- else -%}{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

SPECIAL_TOKENS = [
    "<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>",
    "<start_of_image>", "<end_of_image>", "<image_soft_token>",
]  # fmt: skip
IMAGE_SIZE = 224
PATCH_SIZE = 14
TOKENS_PER_IMAGE = 16  # (224/14)^2 = 256 patches pooled 4x4 -> 16 tokens (MedGemma: 896 px -> 256)


def tiny_config(vocab_size: int, token_id: dict[str, int]) -> Gemma3Config:
    text = Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,  # vLLM's CPU attention rejects head_dim 16
        query_pre_attn_scalar=64,
        sliding_window=512,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=4096,
        pad_token_id=token_id["<pad>"],
        eos_token_id=[token_id["<eos>"], token_id["<end_of_turn>"]],
        bos_token_id=token_id["<bos>"],
    )
    vision = SiglipVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        vision_use_head=False,  # as MedGemma
    )
    return Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=TOKENS_PER_IMAGE,
        boi_token_index=token_id["<start_of_image>"],
        eoi_token_index=token_id["<end_of_image>"],
        image_token_index=token_id["<image_soft_token>"],
    )


def build(out: Path, seed: int, vocab_size: int = 640) -> None:
    """Write the model, tokenizer and processor to `out`; the weights are a function of `seed`.

    transformers initialises Gemma3's multi-modal projector (`mm_input_projection_weight`, the
    matrix that maps the vision tower's pooled features into the text model's embedding space) to
    zeros: a real checkpoint has it trained. Left at zero, every image reaches the language model
    as the same zero vectors and the model is blind: an image-path bug would change nothing, and
    the trainer's image-attention mask would not matter. So the projector is drawn here (see
    `draw_projector`), and the norm scales and biases transformers leaves constant are moved off
    their constants (`tiny_models.perturb`).
    """
    raw = train_sentencepiece_like(vocab_size, SPECIAL_TOKENS)
    tokenizer = wrap(
        raw,
        GEMMA3_CHAT_TEMPLATE,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
    )
    tokenizer.add_bos_token = False  # the chat template writes <bos> itself
    token_id = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    config = tiny_config(len(tokenizer), token_id)
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config).eval()
    scale_embeddings(model, EMBEDDING_STD)
    generator = torch.Generator().manual_seed(seed)
    draw_projector(model, generator)
    perturb_constant_vectors(model, generator)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.save_pretrained(out)
    to_hub_layout(out)
    save_processor(out, tokenizer, IMAGE_SIZE, TOKENS_PER_IMAGE)


def save_processor(out: Path, tokenizer: Any, image_size: int, tokens_per_image: int) -> None:
    """Gemma3's processor as MedGemma's: square images without pan-and-scan, normalised to [-1, 1]."""
    image_processor = Gemma3ImageProcessor(
        size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_pan_and_scan=False,
    )
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=GEMMA3_CHAT_TEMPLATE,
        image_seq_length=tokens_per_image,
    )
    processor.save_pretrained(out)


@torch.no_grad()
def draw_projector(model: Gemma3ForConditionalGeneration, generator: torch.Generator) -> None:
    """N(0, 1/d) for the [d_vision, d_text] projector: its input is RMS-normalised (`mm_soft_emb_norm`),
    so each image token then has unit scale, as the text tokens do after Gemma's sqrt(d_text)
    embedding scale (0.1 x sqrt(128) ~ 1.1)."""
    weight = model.model.multi_modal_projector.mm_input_projection_weight
    std = weight.shape[0] ** -0.5
    weight.copy_(torch.randn(weight.shape, generator=generator, dtype=torch.float32) * std)


def to_hub_layout(out: Path) -> None:
    """One `model.safetensors` whose vision keys read `vision_tower.vision_model.*`: transformers 5
    writes `vision_tower.*` (in shards for a large model); vLLM 0.32 expects the hub's layout (as
    the real MedGemma checkpoint has). transformers still loads the renamed file."""
    index_path = out / "model.safetensors.index.json"
    files = (
        sorted(set(json.loads(index_path.read_text())["weight_map"].values())) if index_path.is_file() else []
    )
    tensors = {}
    for name in files or ["model.safetensors"]:
        tensors.update(load_file(out / name))
    renamed = {}
    for key, tensor in tensors.items():
        for prefix in ("model.vision_tower.", "vision_tower."):
            if key.startswith(prefix) and not key.startswith(prefix + "vision_model."):
                key = prefix + "vision_model." + key[len(prefix) :]
                break
        renamed[key] = tensor.contiguous()
    del tensors
    for name in files:
        (out / name).unlink()
    index_path.unlink(missing_ok=True)
    save_file(renamed, out / "model.safetensors", metadata={"format": "pt"})
