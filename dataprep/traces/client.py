"""An OpenAI-compatible chat client for the teacher model (a vLLM server or a hosted API), with the
project's retry policy (`shared.http_retry`) on 429/500/502/503/504 and connection errors,
honouring the server's `Retry-After`. Any other error status fails the one request, not the run."""

from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import Field

from shared.config import StrictModel
from shared.http_retry import Retrying, RetryPolicy, http_timeout

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# A hosted API's rate limit can last a minute: longer waits than the project's other clients.
TEACHER_RETRY = RetryPolicy(retries=5, backoff_s=1.0, max_backoff_s=60.0)


class TeacherSettings(StrictModel):
    endpoint: str = Field(description='base URL (".../v1") or the full ".../chat/completions" URL')
    model: str
    api_key: str | None = None
    timeout_s: float = Field(120.0, gt=0, description="seconds per request")
    retry: RetryPolicy = TEACHER_RETRY
    temperature: float | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, gt=0)

    def chat_url(self) -> str:
        url = self.endpoint.rstrip("/")
        return url if url.endswith("/chat/completions") else url + "/chat/completions"


@dataclass(frozen=True, slots=True)
class TeacherReply:
    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None


class TeacherRequestFailed(Exception):
    """The teacher gave no answer for one record; `reason` is a short category for the summary."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class TeacherClient:
    """Use as `async with TeacherClient(settings) as teacher: await teacher.complete(messages)`."""

    def __init__(self, settings: TeacherSettings, transport: httpx.AsyncBaseTransport | None = None):
        self.settings = settings
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self._http = httpx.AsyncClient(
            timeout=http_timeout(settings.timeout_s), headers=headers, transport=transport
        )
        self._retrying = Retrying(settings.retry, RETRYABLE_STATUS)

    async def __aenter__(self) -> "TeacherClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._http.aclose()

    async def complete(self, messages: list[dict[str, Any]]) -> TeacherReply:
        body: dict[str, Any] = {"model": self.settings.model, "messages": messages}
        if self.settings.temperature is not None:
            body["temperature"] = self.settings.temperature
        if self.settings.max_tokens is not None:
            body["max_tokens"] = self.settings.max_tokens
        url = self.settings.chat_url()
        try:
            response = await self._retrying.asend(lambda: self._http.post(url, json=body))
        except httpx.TransportError as error:
            raise TeacherRequestFailed(
                f"connection error{self._after_attempts()}", f"{type(error).__name__}: {error}"
            ) from None
        if response.status_code == 200:
            return _read_reply(response)
        passing = response.status_code in RETRYABLE_STATUS  # final only once every attempt is spent
        reason = f"http {response.status_code}" + (self._after_attempts() if passing else "")
        raise TeacherRequestFailed(reason, _snippet(response))

    def _after_attempts(self) -> str:
        attempts = self.settings.retry.attempts
        return f" after {attempts} attempt{'s' if attempts > 1 else ''}"


def _snippet(response: httpx.Response, limit: int = 300) -> str:
    return " ".join(response.text.split())[:limit]


def _read_reply(response: httpx.Response) -> TeacherReply:
    try:
        data = response.json()
        choice = data["choices"][0]
        content = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise TeacherRequestFailed("malformed response", _snippet(response)) from None
    if isinstance(content, list):  # some APIs answer with content parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str):
        raise TeacherRequestFailed("malformed response", "message content is not text")
    usage = data.get("usage") or {}
    return TeacherReply(
        text=content,
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
    )
