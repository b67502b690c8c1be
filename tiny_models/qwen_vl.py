"""A random-weight model of Qwen2.5-VL-3B's architecture (the paper's second model), tiny enough
for CPU tests, loadable by transformers and vLLM."""

from pathlib import Path

import torch
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)

from tiny_models.embeddings import EMBEDDING_STD, scale_embeddings
from tiny_models.perturb import perturb_constant_vectors
from tiny_models.tokenizer import train_byte_level, wrap

QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip
PIXELS_PER_TOKEN = 28 * 28  # 14 px patches merged 2x2
MIN_IMAGE_TOKENS, MAX_IMAGE_TOKENS = 16, 64  # the paper's 256-512 scaled down for CPU tests


def tiny_config(vocab_size: int, token_id: dict[str, int]) -> Qwen2_5_VLConfig:
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1_000_000.0,
                "mrope_section": [8, 12, 12],
            },
            "bos_token_id": token_id["<|endoftext|>"],
            "eos_token_id": token_id["<|im_end|>"],
            "pad_token_id": token_id["<|endoftext|>"],
            "tie_word_embeddings": True,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_heads": 2,
            "out_hidden_size": 128,  # must equal the text hidden size
            "fullatt_block_indexes": [1],
            "window_size": 112,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=token_id["<|image_pad|>"],
        video_token_id=token_id["<|video_pad|>"],
        vision_start_token_id=token_id["<|vision_start|>"],
        vision_end_token_id=token_id["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def build(out: Path, seed: int, vocab_size: int = 768) -> None:
    raw = train_byte_level(vocab_size, SPECIAL_TOKENS)
    tokenizer = wrap(raw, QWEN_CHAT_TEMPLATE, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    token_id = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    config = tiny_config(len(tokenizer), token_id)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    scale_embeddings(model, EMBEDDING_STD)
    # The vision merger is drawn at random by transformers already (the model sees: see
    # tiny_models.probe); norm scales and biases are not.
    perturb_constant_vectors(model, torch.Generator().manual_seed(seed))
    model.generation_config.eos_token_id = [token_id["<|im_end|>"], token_id["<|endoftext|>"]]
    model.save_pretrained(out)
    pixels = {
        "min_pixels": MIN_IMAGE_TOKENS * PIXELS_PER_TOKEN,
        "max_pixels": MAX_IMAGE_TOKENS * PIXELS_PER_TOKEN,
    }
    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": pixels["min_pixels"], "longest_edge": pixels["max_pixels"]}, **pixels
    )
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),  # vLLM's Qwen-VL processor insists on one
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
