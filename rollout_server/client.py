"""A small typed client of the rollout server (httpx), sync and async, with retries and timeouts.

Retries (the project's one policy, `shared.http_retry`) cover connection failures and 502/503/504
(a server still loading or restarting); a 4xx is the caller's mistake and raises `RolloutServerError`
at once. Adapter loads are retried safely: each carries an idempotency key that its retries repeat,
so a load whose answer was lost is not done twice. Adapters travel as raw safetensors (multipart upload).
"""

import json
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from shared.http_retry import DEFAULT_RETRY, Retrying, RetryPolicy, http_timeout
from shared.schemas import (
    AdapterInfo,
    AdapterList,
    AdapterUpdate,
    RolloutRequest,
    RolloutResponse,
    ServerInfo,
)

RETRY_STATUSES = {502, 503, 504}
JSON = {"content-type": "application/json"}


class RolloutServerError(RuntimeError):
    def __init__(self, status: int, field: str, reason: str):
        super().__init__(f"rollout server answered {status}: {field}: {reason}")
        self.status, self.field, self.reason = status, field, reason


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json().get("error", {})
        field, reason = error.get("field", "?"), error.get("reason", response.text)
    except ValueError:
        field, reason = "?", response.text[:200]
    raise RolloutServerError(response.status_code, field, reason)


def _upload(update: AdapterUpdate) -> dict[str, Any]:
    """POST /v1/adapters/{name}/versions arguments: the weights as they are, the config, the key."""
    data = {}
    if update.version is not None:
        data["version"] = str(update.version)
    if update.canary is not None:
        data["canary"] = update.canary.model_dump_json()
    files = {
        "weights": ("adapter_model.safetensors", update.safetensors, "application/octet-stream"),
        "config": ("adapter_config.json", json.dumps(update.adapter_config).encode(), "application/json"),
    }
    return {
        "url": f"/v1/adapters/{quote(update.name, safe='')}/versions",
        "files": files,
        "data": data,
        "headers": _idempotency(),
    }


def _idempotency() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}  # one per load; its retries repeat it


class _Common:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout_s: float = 600.0,
        retry: RetryPolicy = DEFAULT_RETRY,
    ):
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = http_timeout(timeout_s)
        self.retrying = Retrying(retry, RETRY_STATUSES)
        self._http = self._connect()

    def _connect(self) -> Any:
        raise NotImplementedError


class RolloutClient(_Common):
    """Blocking client: `RolloutClient(url).rollouts(request)`."""

    def _connect(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self.headers, timeout=self.timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RolloutClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.retrying.send(lambda: self._http.request(method, path, **kwargs))
        _raise_for_error(response)
        return response

    def wait_ready(self, timeout_s: float = 300.0, poll_s: float = 0.5) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                response = self._http.get("/ready")
                if response.status_code == 200:
                    return
                body = response.json()
                if body.get("error") and not body.get("loading"):
                    raise RolloutServerError(503, "server", f"engine failed to start: {body['error']}")
            except httpx.TransportError:
                pass
            time.sleep(poll_s)
        raise TimeoutError(f"rollout server at {self.base_url} not ready after {timeout_s:.0f} s")

    def info(self) -> ServerInfo:
        return ServerInfo.model_validate(self._request("GET", "/v1/info").json())

    def rollouts(self, request: RolloutRequest) -> RolloutResponse:
        response = self._request(
            "POST", "/v1/rollouts", content=request.model_dump_json(exclude_none=True), headers=JSON
        )
        return RolloutResponse.model_validate_json(response.content)

    def load_adapter(self, update: AdapterUpdate) -> AdapterInfo:
        upload = _upload(update)
        return AdapterInfo.model_validate(self._request("POST", upload.pop("url"), **upload).json())

    def load_adapter_path(self, name: str, path: str | Path, version: int | None = None) -> AdapterInfo:
        """A PEFT adapter folder under the server's adapter root (relative to it, or absolute)."""
        body = {"name": name, "path": str(path), "version": version}
        response = self._request("POST", "/v1/adapters", json=body, headers=_idempotency())
        return AdapterInfo.model_validate(response.json())

    def adapters(self) -> list[AdapterInfo]:
        return AdapterList.model_validate(self._request("GET", "/v1/adapters").json()).adapters

    def unload_adapter(self, name: str, version: int | None = None) -> list[int]:
        params = {} if version is None else {"version": version}
        return self._request("DELETE", f"/v1/adapters/{name}", params=params).json()["unloaded"]


class AsyncRolloutClient(_Common):
    """Non-blocking client for callers that run an event loop (the evaluator, benchmarks)."""

    def _connect(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        return httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=self.timeout, limits=limits
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncRolloutClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.retrying.asend(lambda: self._http.request(method, path, **kwargs))
        _raise_for_error(response)
        return response

    async def rollouts(self, request: RolloutRequest) -> RolloutResponse:
        response = await self._request(
            "POST", "/v1/rollouts", content=request.model_dump_json(exclude_none=True), headers=JSON
        )
        return RolloutResponse.model_validate_json(response.content)

    async def load_adapter(self, update: AdapterUpdate) -> AdapterInfo:
        upload = _upload(update)
        response = await self._request("POST", upload.pop("url"), **upload)
        return AdapterInfo.model_validate(response.json())

    async def adapters(self) -> list[AdapterInfo]:
        return AdapterList.model_validate((await self._request("GET", "/v1/adapters")).json()).adapters
