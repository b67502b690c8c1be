"""POST /v1/chat/completions: the OpenAI-compatible subset (text + one image_url data URI), so
ordinary OpenAI clients can query a checkpoint. `model` picks the adapter: "base", "NAME" (its
latest version) or "NAME:VERSION"."""

import time
import uuid
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from rollout_server.errors import invalid
from rollout_server.routers.dependencies import ReadyService, require_token
from rollout_server.service import selector_from_model_name
from shared.schemas import ChatMessage, ImageRef, RolloutItem, RolloutRequest

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(require_token)])


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use

    model: str | None = None
    messages: list[dict[str, Any]] = Field(min_length=1)
    n: int = Field(1, ge=1)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = None


def split_image(messages: list[dict[str, Any]]) -> tuple[list[ChatMessage], ImageRef]:
    """Pull the single image_url data URI out of the messages, leaving an image placeholder."""
    image: ImageRef | None = None
    converted = []
    for m_index, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for p_index, part in enumerate(content):
                if part.get("type") == "image_url":
                    url = (part.get("image_url") or {}).get("url", "")
                    field = f"messages[{m_index}].content[{p_index}].image_url.url"
                    if not url.startswith("data:") or ";base64," not in url:
                        raise invalid(field, "only base64 data URIs (data:image/...;base64,...) are accepted")
                    if image is not None:
                        raise invalid(field, "one image per request")
                    image = ImageRef(b64=url.split(";base64,", 1)[1])
                    parts.append({"type": "image"})
                else:
                    parts.append(part)
            content = parts
        converted.append(ChatMessage(role=message.get("role", "user"), content=content))
    if image is None:
        raise invalid("messages", "no image_url part; this server reads chest X-rays")
    return converted, image


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, service: ReadyService) -> dict[str, Any]:
    messages, image = split_image(body.messages)
    request = RolloutRequest(
        items=[RolloutItem(image=image, messages=messages)],
        n=body.n,
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=body.max_completion_tokens or body.max_tokens or 512,
        seed=body.seed,
        adapter=selector_from_model_name(body.model),
    )
    result = (await service.rollouts(request)).results[0]
    completion_tokens = sum(len(choice.token_ids) for choice in result.completions)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.model or "base",
        "choices": [
            {
                "index": index,
                "message": {"role": "assistant", "content": choice.text},
                "finish_reason": choice.finish_reason,
                "logprobs": None,
            }
            for index, choice in enumerate(result.completions)
        ],
        "usage": {
            "prompt_tokens": len(result.prompt_token_ids),
            "completion_tokens": completion_tokens,
            "total_tokens": len(result.prompt_token_ids) + completion_tokens,
        },
    }
