"""Request body limits, enforced as the bytes arrive: a declared Content-Length over the limit is
refused before reading, a chunked body as soon as its running total passes it (413 either way).
Adapter uploads (raw safetensors) have their own, larger limit."""

import re

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rollout_server.errors import RequestError

UPLOAD_PATH = re.compile(r"^/v1/adapters/[^/]+/versions/?$")


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, max_upload_bytes: int):
        self.app, self.max_bytes, self.max_upload_bytes = app, max_bytes, max_upload_bytes

    def limit_for(self, scope: Scope) -> int:
        return self.max_upload_bytes if UPLOAD_PATH.match(scope["path"]) else self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await _answer(send, RequestError(400, "content-length", "not a number of bytes"))
            if int(declared) > limit:
                return await _answer(send, _too_large(limit))
        seen, refused = 0, False

        async def counting_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit and not refused:
                # Answer now: whoever reads the body (FastAPI, a form parser) would turn any exception
                # raised here into a 400 "error parsing the body".
                refused = True
                await _answer(send, _too_large(limit))
                raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:  # after a 413, nothing else the app says goes out
                await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not refused:
                raise


class _BodyTooLarge(Exception):
    pass


def _too_large(limit: int) -> RequestError:
    return RequestError(413, "body", f"request body is over the limit of {limit} bytes")


async def _answer(send: Send, error: RequestError) -> None:
    response = JSONResponse(error.body(), status_code=error.status)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:  # pragma: no cover - a response never reads
    return {"type": "http.disconnect"}
