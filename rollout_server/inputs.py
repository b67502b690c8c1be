"""From request items to engine prompts: read each X-ray's header, check the request's pixel
budget, decode, render the prompt with the model's chat template. Every item is checked before any
generation starts, so one bad item fails the request at once with the field that was wrong; the
callers run this in a worker thread, off the event loop."""

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
from shared.images import (
    ImageDecodeError,
    ImageHeader,
    check_header,
    decode_xray,
    image_header,
    resolve_under_root,
)
from shared.prompts import PromptRegistry
from shared.schemas import ImageRef, RolloutItem


@dataclass(frozen=True)
class ImageInput:
    ref: ImageRef
    field: str  # names the image in errors: "items[0].image", or the chat part's URL
    b64_field: str  # names the base64 text: "items[0].image.b64", or the URL again


@dataclass(frozen=True)
class PromptInput:
    item_id: str | None
    image: ImageInput
    messages: list[dict[str, Any]] | None = None  # raw chat messages; else the prompt format
    prompt_format: str | None = None
    messages_field: str = "messages"


@dataclass(frozen=True)
class PreparedPrompt:
    item_id: str | None
    text: str
    image: Image.Image

    def engine_input(self) -> dict[str, Any]:
        return {"prompt": self.text, "multi_modal_data": {"image": self.image}}


def rollout_inputs(items: list[RolloutItem]) -> list[PromptInput]:
    inputs = []
    for index, item in enumerate(items):
        field = f"items[{index}]"
        image = ImageInput(item.image, f"{field}.image", f"{field}.image.b64")
        if item.messages is not None:
            messages = [message.model_dump() for message in item.messages]
            inputs.append(PromptInput(item.item_id, image, messages, messages_field=f"{field}.messages"))
        else:
            inputs.append(PromptInput(item.item_id, image, prompt_format=item.prompt_format,
                                      messages_field=f"{field}.prompt_format"))  # fmt: skip
    return inputs


def image_bytes(image: ImageInput, data_root: Path | None, limits: LimitsConfig) -> bytes:
    ref, field = image.ref, image.field
    if ref.b64 is not None:
        if len(ref.b64) > limits.max_image_bytes * 4 // 3 + 4:
            raise invalid(image.b64_field, f"image is over the size limit of {limits.max_image_bytes} bytes")
        try:
            data = base64.b64decode(ref.b64, validate=True)
        except (binascii.Error, ValueError):
            raise invalid(image.b64_field, "not valid base64") from None
    else:
        if data_root is None:
            raise invalid(f"{field}.path", "this server has no data root; send the image as base64")
        try:
            path = resolve_under_root(data_root, ref.path)
        except UserError as error:
            raise invalid(f"{field}.path", str(error)) from None
        try:
            if not path.is_file():
                raise invalid(f"{field}.path", f"no image at {ref.path!r} under the data root")
            if path.stat().st_size > limits.max_image_bytes:
                raise invalid(
                    f"{field}.path", f"image is over the size limit of {limits.max_image_bytes} bytes"
                )
            data = path.read_bytes()
        except OSError as error:  # a name too long, a file unreadable
            raise invalid(f"{field}.path", f"cannot read {ref.path!r} ({error.strerror})") from None
    if len(data) > limits.max_image_bytes:
        raise invalid(image.b64_field, f"image is over the size limit of {limits.max_image_bytes} bytes")
    return data


def _header(data: bytes, field: str, limits: LimitsConfig) -> ImageHeader:
    try:
        header = image_header(data)
        check_header(header, limits.max_image_pixels)
    except ImageDecodeError as error:
        raise invalid(field, str(error)) from None
    return header


def prepare_prompts(
    inputs: list[PromptInput],
    processor: Any,
    prompts: PromptRegistry,
    data_root: Path | None,
    limits: LimitsConfig,
    budget_field: str,
) -> list[PreparedPrompt]:
    """Headers first, all of them: an image over its cap, or a request over its pixel budget, is
    refused before any pixel of the request is decoded."""
    images = [image_bytes(item.image, data_root, limits) for item in inputs]
    headers = [_header(data, item.image.field, limits) for data, item in zip(images, inputs, strict=True)]
    total = sum(header.pixels for header in headers)
    if total > limits.max_request_pixels:
        raise invalid(
            budget_field,
            f"the images hold {total} pixels, over the request's decoded-pixel budget of "
            f"{limits.max_request_pixels}; send fewer or smaller images per request",
        )
    return [
        _prepare(item, data, processor, prompts, limits) for item, data in zip(inputs, images, strict=True)
    ]


def _prepare(
    item: PromptInput, data: bytes, processor: Any, prompts: PromptRegistry, limits: LimitsConfig
) -> PreparedPrompt:
    try:
        image = decode_xray(data, max_pixels=limits.max_image_pixels)
    except ImageDecodeError as error:
        raise invalid(item.image.field, str(error)) from None
    try:
        if item.messages is not None:
            messages = normalise_messages(item.messages)
        else:
            messages = messages_from_format(item.prompt_format, prompts)
    except UserError as error:
        raise invalid(item.messages_field, str(error)) from None
    return PreparedPrompt(item.item_id, render_prompt(processor, messages), image)
