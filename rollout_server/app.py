"""The FastAPI application: one router per resource, errors as JSON naming the field."""

import asyncio
import contextlib
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from rollout_server.errors import RequestError
from rollout_server.routers import adapters, health, openai_chat, rollouts
from rollout_server.service import RolloutService
from shared.errors import UserError

log = logging.getLogger("cxr_rl.rollout_server")


class BodySizeLimit:
    """Refuse request bodies over the limit (413) before they are read into memory."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and int(declared) > self.max_bytes:
            return await self._refuse(send)
        seen = 0

        async def counting_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _BodyTooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        response = JSONResponse(
            RequestError(413, "body", f"request body is over the limit of {self.max_bytes} bytes").body(),
            status_code=413,
        )
        await response({"type": "http"}, _no_receive, send)


class _BodyTooLarge(Exception):
    pass


async def _no_receive():  # pragma: no cover - a response never reads
    return {"type": "http.disconnect"}


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
    for module in (health, rollouts, adapters, openai_chat):
        app.include_router(module.router)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(UserError)
    async def user_error(request: Request, error: UserError) -> JSONResponse:
        return JSONResponse(RequestError(422, "request", str(error)).body(), status_code=422)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        location = [str(part) for part in first["loc"] if part != "body"]
        field = (
            "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in location).lstrip(".") or "body"
        )
        return JSONResponse(RequestError(422, field, first["msg"]).body(), status_code=422)

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        response = await call_next(request)
        route = request.scope.get("route")
        service.metrics.requests.labels(
            endpoint=getattr(route, "path", "unmatched"), status=str(response.status_code)
        ).inc()
        return response

    app.add_middleware(BodySizeLimit, max_bytes=service.config.limits.max_body_bytes)
    return app


def _log_startup_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("engine failed to start: %s", task.exception())
