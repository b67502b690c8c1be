"""The FastAPI application: one router per resource, errors as JSON naming the field."""

import asyncio
import contextlib
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from rollout_server.body_limit import BodySizeLimit
from rollout_server.errors import RequestError
from rollout_server.routers import adapters, health, models, openai_chat, rollouts
from rollout_server.service import RolloutService
from shared.errors import UserError

log = logging.getLogger("cxr_rl.rollout_server")
LOCATIONS = ("body", "query", "path", "header", "cookie")
HTTP_FIELDS = {404: "path", 405: "method"}


def field_name(location: tuple | list) -> str:
    """pydantic's error location as the request's field: `items[0].image.b64`. The part a location
    starts with (body, query...) and the tags of union members (`str`, `list[str]`) are dropped."""
    parts = list(location)
    if parts and parts[0] in LOCATIONS:
        parts = parts[1:]
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"
        elif "[" in part or part in ("str", "int", "float", "bool", "list", "dict", "none"):
            continue
        else:
            name += f".{part}"
    return name.lstrip(".") or "body"


def validation_answer(errors: list[dict]) -> JSONResponse:
    first = errors[0]
    if first.get("type") == "json_invalid":
        return error_answer(RequestError(422, "body", f"not valid JSON ({first.get('msg')})"))
    return error_answer(RequestError(422, field_name(first.get("loc", ())), first.get("msg", "invalid")))


def error_answer(error: RequestError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


def create_app(service: RolloutService, start_engine: bool = True) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(service.start()) if start_engine else None
        if task is not None:
            task.add_done_callback(_log_startup_failure)
        try:
            yield
        finally:
            if task is not None and not task.done():
                task.cancel()
            service.shutdown()

    app = FastAPI(title="cxr-rl rollout server", lifespan=lifespan)
    app.state.service = service
    for module in (health, rollouts, adapters, openai_chat, models):
        app.include_router(module.router)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError) -> JSONResponse:
        return error_answer(error)

    @app.exception_handler(UserError)
    async def user_error(request: Request, error: UserError) -> JSONResponse:
        return error_answer(RequestError(422, "request", str(error)))

    @app.exception_handler(RequestValidationError)
    async def request_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return validation_answer(list(error.errors()))

    @app.exception_handler(ValidationError)
    async def model_validation_error(request: Request, error: ValidationError) -> JSONResponse:
        return validation_answer(error.errors())  # a model built inside a handler from request data

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        field = HTTP_FIELDS.get(error.status_code, "body")  # 400: a body FastAPI could not parse
        return error_answer(RequestError(error.status_code, field, str(error.detail)))

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        response = await call_next(request)
        route = request.scope.get("route")
        service.metrics.requests.labels(
            endpoint=getattr(route, "path", "unmatched"), status=str(response.status_code)
        ).inc()
        return response

    limits = service.config.limits
    app.add_middleware(
        BodySizeLimit, max_bytes=limits.max_body_bytes, max_upload_bytes=limits.max_adapter_bytes
    )
    return app


def _log_startup_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("engine failed to start: %s", task.exception())
