"""A random-weight model of MedGemma-4B's architecture (Gemma3ForConditionalGeneration: SigLIP
tower + projector + Gemma3 text), small enough to run in tests on a CPU, saved in the hub layout
that both transformers and vLLM load."""

import json
from pathlib import Path
from typing import Any

import numpy as np
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

from dataprep.phantoms.films import unlabelled_films
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
WHITENING_FILMS = 192  # phantom films the projector's statistics are fitted on (about a second)
WHITENED_DIMS = 48  # of the vision tower's 64: the directions left are noise on these films
WHITENING_FILMS_SEED = 1_000_003  # + the model's seed: films no phantom data set draws


ATTENTION_HEADS = 8


def tiny_config(
    vocab_size: int, token_id: dict[str, int], attention_heads: int = ATTENTION_HEADS
) -> Gemma3Config:
    text = Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        # 8 query heads over 2 key/value heads (MedGemma-4B: 8 over 4): each head can read another
        # part of the film; with 2 heads the demo's SFT learned fewer findings (README, "What the
        # demo learns")
        num_attention_heads=attention_heads,
        num_key_value_heads=max(1, attention_heads // 4),
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


def build(out: Path, seed: int, vocab_size: int = 640, attention_heads: int = ATTENTION_HEADS) -> None:
    """Write the model, tokenizer and processor to `out`; the weights are a function of `seed`
    (`attention_heads`: the text model's query heads, for comparisons; the tiny model has 8).

    transformers initialises Gemma3's multi-modal projector (`mm_input_projection_weight`, the
    matrix that maps the vision tower's pooled features into the text model's embedding space) to
    zeros: a real checkpoint has it trained. Left at zero, every image reaches the language model
    as the same zero vectors and the model is blind: an image-path bug would change nothing, and
    the trainer's image-attention mask would not matter. So the norm scales and biases
    transformers leaves constant are moved off their constants (`tiny_models.perturb`), then the
    projector is fitted to phantom films (`fit_projector`): a random vision tower gives every
    image nearly the same features, and a projector drawn at random passes that sameness on.
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
    config = tiny_config(len(tokenizer), token_id, attention_heads)
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config).eval()
    scale_embeddings(model, EMBEDDING_STD)
    generator = torch.Generator().manual_seed(seed)
    perturb_constant_vectors(model, generator)
    fit_projector(model, generator, films_seed=WHITENING_FILMS_SEED + seed)
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


@torch.no_grad()
def fit_projector(model: Gemma3ForConditionalGeneration, generator: torch.Generator, films_seed: int) -> None:
    """Whiten what differs between films, then mix it at random into the text width.

    The random SigLIP tower maps every film to nearly the same pooled features: after the RMS
    norm the projector reads, one direction common to all films carries most of each token's
    length, and what tells films apart sits in a few small directions. A projector drawn at random
    keeps those proportions, so the language model sees near-identical image tokens and its LoRA
    learns the labels' rates, not the films (issue 15's demo gave one answer to every image).
    Fitted on WHITENING_FILMS phantom films (`unlabelled_films`, a seed no data set uses): the
    common direction is projected out, the top WHITENED_DIMS principal directions of the rest are
    scaled to unit variance, and a random [WHITENED_DIMS, d_text] matrix mixes them (N(0, 1/k):
    unit scale per image-token dimension, as `draw_projector`). Still a linear projector, as the
    architecture's; only its weights are chosen, deterministically from the seeds."""
    films = unlabelled_films(WHITENING_FILMS, films_seed, model.config.vision_config.image_size)
    levels = torch.from_numpy(np.stack([np.asarray(film, dtype=np.float32) for film in films]))
    pixels = (levels / 127.5 - 1.0).unsqueeze(1).expand(-1, 3, -1, -1)  # the processor's [-1, 1] RGB
    projector = model.model.multi_modal_projector
    captured: list[torch.Tensor] = []
    hook = projector.mm_soft_emb_norm.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        for batch in pixels.split(32):
            model.model.get_image_features(pixel_values=batch.contiguous())
    finally:
        hook.remove()
    tokens = torch.cat(captured).flatten(0, 1).double()  # [films x tokens, d_vision]
    common = tokens.mean(0)
    common = common / common.norm()
    off_common = torch.eye(tokens.shape[1], dtype=torch.float64) - torch.outer(common, common)
    rest = tokens @ off_common  # the mean lies along `common`: what is left is centred
    variances, directions = torch.linalg.eigh(rest.T @ rest / len(rest))  # ascending
    top = directions[:, -WHITENED_DIMS:] / variances[-WHITENED_DIMS:].sqrt()
    mix = torch.randn((WHITENED_DIMS, projector.mm_input_projection_weight.shape[1]), generator=generator)
    weight = off_common @ top @ (mix.double() / WHITENED_DIMS**0.5)
    projector.mm_input_projection_weight.copy_(weight.to(projector.mm_input_projection_weight.dtype))


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
