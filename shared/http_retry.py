"""One retry policy for every HTTP client of the project (rollout server, reward service, teacher model).

A request is sent again after a connection failure (refused, reset, timed out) or an answer whose
status the client names as passing (a server loading, restarting or rate-limiting); any other answer
is final at once. The wait doubles from `backoff_s` up to `max_backoff_s`, each drawn between half
and all of that, so that clients turned away together do not all come back together; a server's
`Retry-After` is honoured instead (up to ten minutes). The last answer is returned whatever its status,
and the last connection failure is raised, so each client words its own error.
"""

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
from pydantic import Field

from shared.config import StrictModel

CONNECT_TIMEOUT_S = 10.0
RETRY_AFTER_LIMIT_S = 600.0  # a longer Retry-After is a server's mistake, not a plan


class RetryPolicy(StrictModel, frozen=True):
    retries: int = Field(
        3, ge=0, description="attempts after the first, on a connection failure or a passing status"
    )
    backoff_s: float = Field(0.5, ge=0.0, description="the first wait in seconds, doubled for each retry")
    max_backoff_s: float = Field(8.0, ge=0.0, description="the longest wait between two attempts")

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def backoff(self, retry: int, draw: float) -> float:
        """The wait before retry number `retry` (0-based), `draw` in [0, 1) placing it between half
        and all of the exponential ceiling."""
        ceiling = min(self.max_backoff_s, self.backoff_s * 2**retry)
        return ceiling * (0.5 + 0.5 * draw)


DEFAULT_RETRY = RetryPolicy()


def http_timeout(timeout_s: float) -> httpx.Timeout:
    """`timeout_s` for each read, write and pool wait; connecting gives up sooner (a host that does
    not answer a connect within 10 s is down, and the retry policy takes over)."""
    return httpx.Timeout(timeout_s, connect=min(timeout_s, CONNECT_TIMEOUT_S))


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


class Retrying:
    """`policy` applied to requests whose answers in `statuses` are worth another try:
    `Retrying(policy, {503}).send(lambda: client.get(url))`, or `await ....asend(...)` with an
    `httpx.AsyncClient`. `send` makes the whole request again each time (a multipart body included)."""

    def __init__(self, policy: RetryPolicy, statuses: Collection[int]):
        self.policy = policy
        self.statuses = frozenset(statuses)
        self._jitter = random.Random()

    def wait_s(self, outcome: httpx.Response | httpx.TransportError, retry: int) -> float | None:
        """Seconds to wait before retry number `retry` (0-based), or None when `outcome` is final."""
        if retry >= self.policy.retries:
            return None
        if isinstance(outcome, httpx.Response):
            if outcome.status_code not in self.statuses:
                return None
            asked = retry_after_seconds(outcome.headers.get("retry-after"))
            if asked is not None:
                return asked
        return self.policy.backoff(retry, self._jitter.random())

    def send(self, send: Callable[[], httpx.Response]) -> httpx.Response:
        retry = 0
        while True:
            try:
                outcome: httpx.Response | httpx.TransportError = send()
            except httpx.TransportError as error:
                outcome = error
            wait = self.wait_s(outcome, retry)
            if wait is None:
                return _final(outcome)
            time.sleep(wait)
            retry += 1

    async def asend(self, send: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
        retry = 0
        while True:
            try:
                outcome: httpx.Response | httpx.TransportError = await send()
            except httpx.TransportError as error:
                outcome = error
            wait = self.wait_s(outcome, retry)
            if wait is None:
                return _final(outcome)
            await asyncio.sleep(wait)
            retry += 1


def _final(outcome: httpx.Response | httpx.TransportError) -> httpx.Response:
    if isinstance(outcome, httpx.TransportError):
        raise outcome
    return outcome
