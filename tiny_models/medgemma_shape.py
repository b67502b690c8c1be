"""MedGemma-4B's real shape with few layers: a random-weight Gemma3ForConditionalGeneration at the
published checkpoint's widths (text 2560 wide, 8 query and 4 key/value heads of 256, MLP 10240;
SigLIP 1152 wide, MLP 4304, 16 heads), its 262,208-row embedding, a 262,145-entry tokenizer with the
special tokens at the config's ids, 896-px images and 256 image tokens, but N text and N vision
layers (the real model has 34 and 27). With one layer it weighs 3.2 GB in float32 (1.6 GB in
bfloat16, as it is saved: the embedding alone is 671M parameters, a layer 110M), small enough to serve with vLLM on a CPU and
train beside it, so what real shapes change (262k-wide logits, 256-token images, a full-width LoRA)
runs here before it runs on a GPU.

With N >= 2 the last layer attends globally and the others in a sliding window (MedGemma: 5 local
to 1 global), so both attention kinds and both rotary settings run; N = 1 gives one global layer.
"""

from pathlib import Path

import torch
from transformers import (
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    PreTrainedTokenizerFast,
)

from deploy.architectures import MEDGEMMA_4B, real_size_config
from shared.errors import UserError
from tiny_models.full_vocab import FIXED_IDS, full_size_tokenizer
from tiny_models.medgemma import GEMMA3_CHAT_TEMPLATE, draw_projector, save_processor, to_hub_layout
from tiny_models.perturb import perturb_constant_vectors

IMAGE_SIZE = 896
TOKENS_PER_IMAGE = 256  # (896/14)^2 = 4096 patches pooled 4x4
MAX_LAYERS = 34  # MedGemma-4B's text layers; its vision tower has 27
SAVED_DTYPE = torch.bfloat16  # as the published checkpoint; loaders upcast when asked
# Gemma 3 normalises each block's output ("post" norms, scale 1 + w). Left at 1, a model of one or
# two layers is dominated by the input token's own embedding, which is tied to the output layer: a
# 1-layer model then repeats its last input token with probability ~1 (logit ~51 against ~N(0, 1)
# for the rest). At 8 the blocks decide: the next-token entropy is ~12 of ln(262,145) = 12.5 nats,
# and an image moves the logprobs by several nats (measured on the 1-layer model).
POST_BLOCK_SCALE = 8.0


def shape_config(layers: int) -> Gemma3Config:
    """MedGemma-4B's config.json (the published values, as deploy.architectures holds them) with
    `layers` text and vision layers."""
    if not 1 <= layers <= MAX_LAYERS:
        raise UserError(f"--layers must be 1..{MAX_LAYERS} for medgemma-4b-shape, not {layers}")
    data = real_size_config(MEDGEMMA_4B).to_dict()
    text, vision = data["text_config"], data["vision_config"]
    text["num_hidden_layers"] = layers
    text["layer_types"] = ["sliding_attention"] * (layers - 1) + ["full_attention"]
    # The published checkpoint stretches the global layers' rotary positions 8x (linear scaling).
    text["rope_parameters"] = {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
    }
    text.update(pad_token_id=FIXED_IDS["<pad>"], bos_token_id=FIXED_IDS["<bos>"])
    text["eos_token_id"] = [FIXED_IDS["<eos>"], FIXED_IDS["<end_of_turn>"]]
    vision["num_hidden_layers"] = min(layers, 27)
    assert vision["image_size"] == IMAGE_SIZE and data["mm_tokens_per_image"] == TOKENS_PER_IMAGE
    data.update(
        boi_token_index=FIXED_IDS["<start_of_image>"],
        eoi_token_index=FIXED_IDS["<end_of_image>"],
        image_token_index=FIXED_IDS["<image_soft_token>"],
        eos_token_id=text["eos_token_id"],
    )
    data.pop("model_type", None)
    return Gemma3Config(**data)


def shape_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=full_size_tokenizer(),
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
    )
    tokenizer.chat_template = GEMMA3_CHAT_TEMPLATE
    tokenizer.add_bos_token = False  # the chat template writes <bos> itself
    for token, index in FIXED_IDS.items():
        assert tokenizer.convert_tokens_to_ids(token) == index, token
    return tokenizer


def build(out: Path, seed: int, layers: int = 1) -> None:
    """Write the model (bfloat16 safetensors in the hub layout vLLM loads), tokenizer and processor
    to `out`; the weights are a function of `seed` and `layers`.

    Weights are transformers' initialisation at these widths (embeddings N(0, 0.02): times Gemma's
    sqrt(2560) input scale, unit-scale text tokens), with the projector drawn so the model sees
    and the constant norm scales moved, as for the tiny MedGemma (see tiny_models.medgemma.build),
    and the blocks' output norms scaled (`POST_BLOCK_SCALE`).
    """
    config = shape_config(layers)
    tokenizer = shape_tokenizer()
    torch.manual_seed(seed)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(SAVED_DTYPE)  # drawn in bfloat16: half the memory of a float32 draw
    try:
        model = Gemma3ForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(default_dtype)
    generator = torch.Generator().manual_seed(seed)
    draw_projector(model, generator)
    perturb_constant_vectors(model, generator)
    _scale_block_outputs(model, POST_BLOCK_SCALE)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = FIXED_IDS["<pad>"]
    model.generation_config.bos_token_id = FIXED_IDS["<bos>"]
    model.save_pretrained(out)
    del model
    to_hub_layout(out)
    save_processor(out, tokenizer, IMAGE_SIZE, TOKENS_PER_IMAGE)


@torch.no_grad()
def _scale_block_outputs(model: Gemma3ForConditionalGeneration, scale: float) -> None:
    for layer in model.model.language_model.layers:
        for norm in (layer.post_attention_layernorm, layer.post_feedforward_layernorm):
            norm.weight.add_(scale - 1.0)  # Gemma's RMSNorm multiplies by (1 + weight)
