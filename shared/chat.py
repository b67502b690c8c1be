"""Turning an X-ray request into the prompt text a model's chat template makes of it.

The rollout server and the trainer both call `render_prompt` with the model's own processor, so
that one X-ray and prompt become the same token ids on both sides (the trainer checks this).
"""

import json
from pathlib import Path
from typing import Any

from shared.errors import UserError
from shared.prompts import PromptRegistry, user_messages


def messages_from_format(format_name: str, prompts: PromptRegistry) -> list[dict[str, Any]]:
    return user_messages(prompts.get(format_name))


def normalise_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Raw chat messages -> the template's form; exactly one `{"type": "image"}` part overall."""
    normalised, images = [], 0
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            normalised.append({"role": message["role"], "content": [{"type": "text", "text": content}]})
            continue
        parts = []
        for part in content:
            kind = part.get("type")
            if kind in ("image", "image_url"):
                images += 1
                parts.append({"type": "image"})
            elif kind == "text":
                parts.append({"type": "text", "text": str(part.get("text", ""))})
            else:
                raise UserError(f"unsupported message part type {kind!r} (use 'text' or 'image')")
        normalised.append({"role": message["role"], "content": parts})
    if images != 1:
        raise UserError(f"messages must hold exactly one image part, found {images}")
    return normalised


def render_prompt(processor: Any, messages: list[dict[str, Any]]) -> str:
    """The prompt text (image placeholder included) up to where the assistant starts writing."""
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


PLACEHOLDER_KEYS = (
    "image_token_index", "image_token_id", "boi_token_index", "eoi_token_index",
    "video_token_id", "vision_start_token_id", "vision_end_token_id",
)  # fmt: skip


def multimodal_placeholder_ids(model_dir: str) -> list[int]:
    """Token ids that stand for image (or video) slots in the model's config."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return sorted({int(config[key]) for key in PLACEHOLDER_KEYS if isinstance(config.get(key), int)})


# A fixed text-only prompt whose prompt logprobs fingerprint the weights a server runs: the server
# compares them across adapter versions, and the trainer sends what its own model gives for them.
CANARY_TOKEN_IDS = tuple((7 * index + 11) % 97 + 10 for index in range(24))
