"""An OpenAI-compatible chat client for the teacher model (a vLLM server or a hosted API), with
retries: exponential backoff with jitter on 429/500/502/503/504 and connection errors, honouring
the server's `Retry-After`. Any other error status fails the one request, not the run."""

import asyncio
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
RETRY_AFTER_LIMIT_S = 600.0  # a longer Retry-After is a server's mistake, not a plan


class TeacherSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint: str  # base URL (".../v1") or the full ".../chat/completions" URL
    model: str
    api_key: str | None = None
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(5, ge=0)
    initial_backoff_s: float = Field(1.0, ge=0)
    max_backoff_s: float = Field(60.0, ge=0)
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


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds to wait: either delay-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), RETRY_AFTER_LIMIT_S)


class TeacherClient:
    """Use as `async with TeacherClient(settings) as teacher: await teacher.complete(messages)`."""

    def __init__(self, settings: TeacherSettings, transport: httpx.AsyncBaseTransport | None = None):
        self.settings = settings
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.timeout_s), headers=headers, transport=transport
        )
        self._jitter = random.Random()

    async def __aenter__(self) -> "TeacherClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._http.aclose()

    def backoff_s(self, attempt: int) -> float:
        """Exponential backoff for retry number `attempt` (0-based), with jitter so that the
        requests a rate limit turned away at once do not all come back at once."""
        ceiling = min(self.settings.max_backoff_s, self.settings.initial_backoff_s * 2**attempt)
        return ceiling * (0.5 + 0.5 * self._jitter.random())

    async def complete(self, messages: list[dict[str, Any]]) -> TeacherReply:
        body: dict[str, Any] = {"model": self.settings.model, "messages": messages}
        if self.settings.temperature is not None:
            body["temperature"] = self.settings.temperature
        if self.settings.max_tokens is not None:
            body["max_tokens"] = self.settings.max_tokens
        attempts = self.settings.max_retries + 1
        for attempt in range(attempts):
            try:
                response = await self._http.post(self.settings.chat_url(), json=body)
            except httpx.TransportError as error:
                failure = TeacherRequestFailed("connection error", f"{type(error).__name__}: {error}")
                wait = self.backoff_s(attempt)
            else:
                if response.status_code == 200:
                    return _read_reply(response)
                failure = TeacherRequestFailed(f"http {response.status_code}", _snippet(response))
                if response.status_code not in RETRYABLE_STATUS:
                    raise failure
                wait = retry_after_seconds(response.headers.get("retry-after"))
                if wait is None:
                    wait = self.backoff_s(attempt)
            if attempt + 1 == attempts:
                raise TeacherRequestFailed(
                    f"{failure.reason} after {attempts} attempt{'s' if attempts > 1 else ''}", failure.detail
                ) from None
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")


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
