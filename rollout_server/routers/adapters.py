"""LoRA adapters: upload a version (raw safetensors), load one from under the adapter root, list,
unload. Changes need the server's key; a server started without one refuses them (closed by
default). A client's retry of a load it never heard back from (a timeout, a reset) creates no second
version: it repeats its `Idempotency-Key` header, or the version it chose."""

import json
import shutil
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from pydantic import Field, ValidationError
from starlette.datastructures import UploadFile

from rollout_server.errors import invalid
from rollout_server.routers.dependencies import ReadyService, get_ready_service, require_admin, require_token
from shared.config import StrictModel
from shared.schemas import AdapterInfo, AdapterList, CanaryCheck

router = APIRouter(prefix="/v1/adapters", tags=["adapters"], dependencies=[Depends(require_token)])
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]
MAX_PARTS = 6
WEIGHTS_CHUNK = 1024 * 1024


class AdapterPathRequest(StrictModel):
    """A PEFT adapter folder on the server's machine, under its adapter root (--adapter-root)."""

    name: str
    path: str
    version: int | None = Field(None, ge=0)


@router.post("", response_model=AdapterInfo, dependencies=[Depends(require_admin)])
async def load_adapter_path(
    body: AdapterPathRequest, service: ReadyService, idempotency_key: IdempotencyKey = None
) -> AdapterInfo:
    return await service.load_adapter_path(body.name, body.path, body.version, idempotency_key)


@router.post("/{name}/versions", response_model=AdapterInfo, dependencies=[Depends(require_admin)])
async def upload_adapter(name: str, request: Request, idempotency_key: IdempotencyKey = None) -> AdapterInfo:
    """multipart/form-data: `weights` (adapter_model.safetensors, raw), `config` (adapter_config.json),
    optional `version` and `canary` (a JSON object, shared.schemas.CanaryCheck: what the canary
    must read). The body is read (to its own size limit) before the engine is asked."""
    service = request.app.state.service
    folder = service.adapters.staging_folder(name)
    try:
        fields = await _read_upload(request, folder)
        service = get_ready_service(request)
        return await service.load_staged_adapter(name, folder, idempotency_key=idempotency_key, **fields)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # moved into place when loaded; left over otherwise


async def _read_upload(request: Request, folder) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise invalid("body", "send multipart/form-data with the parts 'weights' and 'config'")
    form = await request.form(max_files=2, max_fields=MAX_PARTS, max_part_size=1024 * 1024)
    try:
        weights, config = form.get("weights"), form.get("config")
        if not isinstance(weights, UploadFile):
            raise invalid("weights", "missing the 'weights' file part (adapter_model.safetensors)")
        with (folder / "adapter_model.safetensors").open("wb") as out:
            while chunk := await weights.read(WEIGHTS_CHUNK):
                out.write(chunk)
        if config is None:
            raise invalid("config", "missing the 'config' part (adapter_config.json)")
        text = await config.read() if isinstance(config, UploadFile) else config
        adapter_config = _json_field("config", text, dict)
        (folder / "adapter_config.json").write_text(json.dumps(adapter_config))
        fields: dict[str, Any] = {}
        if form.get("version") is not None:
            fields["version"] = _number_field("version", form.get("version"), int, minimum=0)
        if form.get("canary") is not None:
            fields["canary"] = _canary_field(form.get("canary"))
        return fields
    finally:
        await form.close()


def _canary_field(value: Any) -> CanaryCheck:
    try:
        return CanaryCheck.model_validate(_json_field("canary", value, dict))
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise invalid(f"canary.{where}" if where else "canary", problem["msg"]) from None


def _json_field(name: str, value: Any, kind: type) -> Any:
    if isinstance(value, UploadFile):
        raise invalid(name, "a form field, not a file")
    try:
        parsed = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        raise invalid(name, "not valid JSON") from None
    if not isinstance(parsed, kind):
        raise invalid(name, f"a JSON {'object' if kind is dict else 'list'}")
    return parsed


def _number_field(name: str, value: Any, kind: type, minimum: float) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise invalid(
            name, f"not a{'n integer' if kind is int else ' number'}: {str(value)[:40]!r}"
        ) from None
    if not number >= minimum:  # also refuses NaN
        raise invalid(name, f"must be at least {minimum}")
    return number


@router.get("", response_model=AdapterList)
async def list_adapters(service: ReadyService) -> AdapterList:
    return AdapterList(adapters=service.adapters.listing())


@router.delete("/{name}", dependencies=[Depends(require_admin)])
async def unload_adapter(name: str, service: ReadyService, version: int | None = None) -> dict:
    return {"name": name, "unloaded": await service.adapters.unload(name, version)}
