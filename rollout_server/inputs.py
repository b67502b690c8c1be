"""From request items to engine prompts: decode each X-ray, render the prompt with the model's
chat template. Every item is checked before any generation starts, so one bad item fails the
request at once with the field that was wrong."""

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from rollout_server.config import LimitsConfig
from rollout_server.errors import invalid
from shared.chat import messages_from_format, normalise_messages, render_prompt
from shared.errors import UserError
from shared.images import decode_xray, resolve_under_root
from shared.prompts import PromptRegistry
from shared.schemas import ImageRef, RolloutItem


@dataclass(frozen=True)
class PreparedPrompt:
    item_id: str | None
    text: str
    image: Image.Image

    def engine_input(self) -> dict[str, Any]:
        return {"prompt": self.text, "multi_modal_data": {"image": self.image}}


def image_bytes(ref: ImageRef, field: str, data_root: Path | None, limits: LimitsConfig) -> bytes:
    if ref.b64 is not None:
        if len(ref.b64) > limits.max_image_bytes * 4 // 3 + 4:
            raise invalid(f"{field}.b64", f"image is over the size limit of {limits.max_image_bytes} bytes")
        try:
            return base64.b64decode(ref.b64, validate=True)
        except (binascii.Error, ValueError):
            raise invalid(f"{field}.b64", "not valid base64") from None
    if data_root is None:
        raise invalid(f"{field}.path", "this server has no data root; send the image as base64")
    try:
        path = resolve_under_root(data_root, ref.path)
    except UserError as error:
        raise invalid(f"{field}.path", str(error)) from None
    if not path.is_file():
        raise invalid(f"{field}.path", f"no image at {ref.path!r} under the data root")
    if path.stat().st_size > limits.max_image_bytes:
        raise invalid(f"{field}.path", f"image is over the size limit of {limits.max_image_bytes} bytes")
    return path.read_bytes()


def decode_image(data: bytes, field: str, limits: LimitsConfig) -> Image.Image:
    if len(data) > limits.max_image_bytes:
        raise invalid(field, f"image is over the size limit of {limits.max_image_bytes} bytes")
    try:
        return decode_xray(data, max_pixels=limits.max_image_pixels)
    except UserError as error:
        raise invalid(field, str(error)) from None


def prepare_item(
    item: RolloutItem,
    index: int,
    processor: Any,
    prompts: PromptRegistry,
    data_root: Path | None,
    limits: LimitsConfig,
) -> PreparedPrompt:
    field = f"items[{index}]"
    image = decode_image(
        image_bytes(item.image, f"{field}.image", data_root, limits), f"{field}.image", limits
    )
    try:
        if item.messages is not None:
            messages = normalise_messages([message.model_dump() for message in item.messages])
        else:
            messages = messages_from_format(item.prompt_format, prompts)
    except UserError as error:
        name = "messages" if item.messages is not None else "prompt_format"
        raise invalid(f"{field}.{name}", str(error)) from None
    return PreparedPrompt(item.item_id, render_prompt(processor, messages), image)
