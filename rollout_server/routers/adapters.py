"""LoRA adapters: load a version (from a path, or bytes), list, unload."""

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, model_validator

from rollout_server.errors import invalid
from rollout_server.routers.dependencies import ReadyService, require_token
from rollout_server.service import decode_adapter_b64
from shared.schemas import AdapterInfo, AdapterList, AdapterUpdate

router = APIRouter(prefix="/v1/adapters", tags=["adapters"], dependencies=[Depends(require_token)])


class AdapterLoadRequest(BaseModel):
    """Either `path` (a PEFT adapter folder on the server's machine) or the adapter's bytes:
    `safetensors_b64` (adapter_model.safetensors, base64) with `adapter_config` (its JSON)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: int | None = None
    path: str | None = None
    safetensors_b64: str | None = None
    adapter_config: dict | None = None
    canary_expected: list[float] | None = None  # see shared.schemas.AdapterUpdate
    canary_tolerance: float = 1e-3

    @model_validator(mode="after")
    def _one_source(self) -> "AdapterLoadRequest":
        if (self.path is None) == (self.safetensors_b64 is None):
            raise ValueError("give exactly one of 'path' or 'safetensors_b64' (with 'adapter_config')")
        if self.safetensors_b64 is not None and self.adapter_config is None:
            raise ValueError("'safetensors_b64' needs 'adapter_config'")
        return self


@router.post("", response_model=AdapterInfo)
async def load_adapter(body: AdapterLoadRequest, service: ReadyService) -> AdapterInfo:
    if body.version is not None and body.version < 0:
        raise invalid("version", "versions are non-negative")
    if body.path is not None:
        return await service.load_adapter_path(body.name, body.path, body.version)
    update = AdapterUpdate(
        name=body.name,
        version=body.version,
        safetensors=decode_adapter_b64(body.safetensors_b64),
        adapter_config=body.adapter_config,
        canary_expected=body.canary_expected,
        canary_tolerance=body.canary_tolerance,
    )
    return await service.load_adapter_update(update)


@router.get("", response_model=AdapterList)
async def list_adapters(service: ReadyService) -> AdapterList:
    return AdapterList(adapters=service.adapters.listing())


@router.delete("/{name}")
async def unload_adapter(name: str, service: ReadyService, version: int | None = None) -> dict:
    return {"name": name, "unloaded": await service.adapters.unload(name, version)}
