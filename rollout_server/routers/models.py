"""GET /v1/models: what an OpenAI client may name in `model` (the served base model and every live
adapter version), in OpenAI's list format with vLLM's extra fields (root, parent, max_model_len)."""

from typing import Any

from fastapi import APIRouter, Depends

from rollout_server.errors import not_found
from rollout_server.routers.dependencies import ReadyService, require_token
from rollout_server.service import RolloutService

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(require_token)])


def model_cards(service: RolloutService) -> list[dict[str, Any]]:
    config = service.config
    base = {
        "id": config.model_name,
        "object": "model",
        "created": int(service.adapters.created_at),  # the server's start
        "owned_by": "cxr-rl",
        "root": config.engine.model,
        "parent": None,
        "max_model_len": config.engine.max_model_len,
    }
    adapters = [
        {
            "id": f"{info.name}:{info.version}",
            "object": "model",
            "created": int(info.loaded_at),
            "owned_by": "cxr-rl",
            "root": info.name,
            "parent": config.model_name,
            "max_model_len": config.engine.max_model_len,
        }
        for info in sorted(service.adapters.listing(), key=lambda info: (info.name, info.version))
    ]
    return [base, *adapters]


@router.get("/models")
async def list_models(service: ReadyService) -> dict[str, Any]:
    return {"object": "list", "data": model_cards(service)}


@router.get("/models/{model_id:path}")
async def retrieve_model(model_id: str, service: ReadyService) -> dict[str, Any]:
    for card in model_cards(service):
        if card["id"] == model_id:
            return card
    raise not_found("model", f"no model {model_id!r} (GET /v1/models lists them)")
