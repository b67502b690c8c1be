"""The one retry policy of every HTTP client, against real HTTP servers on 127.0.0.1 that fail a
given number of times: passing statuses and dropped connections are retried, other answers are final,
Retry-After is honoured, a hung server times out and is retried, and the attempts are bounded."""

import asyncio
import contextlib
import http.server
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from shared.http_retry import Retrying, RetryPolicy, http_timeout, retry_after_seconds

FAST = RetryPolicy(retries=3, backoff_s=0.001, max_backoff_s=0.01)
PASSING = {502, 503, 504}


class ScriptedServer(http.server.ThreadingHTTPServer):
    """Answers request i with `script[i]` (the last entry repeats): a status code, "drop" (close
    the connection without an answer), or "hang" (answer nothing until the server stops)."""

    daemon_threads = True

    def __init__(self, script: list, headers: dict[str, str] | None = None):
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.script, self.headers = script, headers or {}
        self.seen = 0
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def next_answer(self):
        with self.lock:
            self.seen += 1
            return self.script[min(self.seen, len(self.script)) - 1]


class _ScriptedHandler(http.server.BaseHTTPRequestHandler):
    server: ScriptedServer

    def do_GET(self) -> None:
        answer = self.server.next_answer()
        if answer == "drop":
            self.close_connection = True
            return
        if answer == "hang":
            self.server.stopping.wait()
            self.close_connection = True
            return
        body = f"answer {answer}".encode()
        self.send_response(answer)
        for name, value in (self.server.headers if answer != 200 else {}).items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def scripted_server(script: list, headers: dict[str, str] | None = None) -> Iterator[ScriptedServer]:
    server = ScriptedServer(script, headers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()


def get_sync(url: str, policy: RetryPolicy, timeout_s: float = 10.0) -> httpx.Response:
    with httpx.Client(timeout=http_timeout(timeout_s)) as client:
        return Retrying(policy, PASSING).send(lambda: client.get(url))


def get_async(url: str, policy: RetryPolicy, timeout_s: float = 10.0) -> httpx.Response:
    async def run() -> httpx.Response:
        async with httpx.AsyncClient(timeout=http_timeout(timeout_s)) as client:
            return await Retrying(policy, PASSING).asend(lambda: client.get(url))

    return asyncio.run(run())


CLIENTS = pytest.mark.parametrize("get", [get_sync, get_async], ids=["sync", "async"])


@CLIENTS
def test_a_server_that_fails_twice_is_answered_on_the_third_attempt(get):
    with scripted_server([503, "drop", 200]) as server:
        response = get(server.url, FAST)
    assert (response.status_code, response.text, server.seen) == (200, "answer 200", 3)


@CLIENTS
def test_the_attempts_are_bounded_and_the_last_answer_is_returned(get):
    with scripted_server([502]) as server:
        response = get(server.url, FAST)
    assert (response.status_code, server.seen) == (502, FAST.attempts)


@CLIENTS
@pytest.mark.parametrize("status", [400, 404, 500])
def test_an_answer_outside_the_passing_statuses_is_final(get, status):
    with scripted_server([status, 200]) as server:
        response = get(server.url, FAST)
    assert (response.status_code, server.seen) == (status, 1)


@CLIENTS
def test_the_last_connection_failure_is_raised(get):
    with scripted_server(["drop"]) as server, pytest.raises(httpx.RemoteProtocolError):
        get(server.url, RetryPolicy(retries=2, backoff_s=0.001))
    assert server.seen == 3


@CLIENTS
def test_a_hung_request_times_out_and_is_retried(get):
    with scripted_server(["hang", 200]) as server:
        response = get(server.url, FAST, timeout_s=0.5)
    assert (response.status_code, server.seen) == (200, 2)


@CLIENTS
def test_retry_after_is_honoured(get):
    with scripted_server([503, 200], headers={"Retry-After": "0.3"}) as server:
        started = time.monotonic()
        response = get(server.url, FAST)
    assert (response.status_code, server.seen) == (200, 2)
    assert time.monotonic() - started >= 0.3  # the backoff alone waits at most 10 ms


def test_no_retries_sends_once():
    with scripted_server([503, 200]) as server:
        response = get_sync(server.url, RetryPolicy(retries=0))
    assert (response.status_code, server.seen) == (503, 1)


def test_backoff_doubles_up_to_its_ceiling_with_jitter():
    policy = RetryPolicy(backoff_s=1.0, max_backoff_s=5.0)
    for retry, ceiling in [(0, 1), (1, 2), (2, 4), (3, 5), (9, 5)]:
        assert policy.backoff(retry, 0.0) == ceiling / 2
        assert policy.backoff(retry, 0.999999) == pytest.approx(ceiling)
    waits = {Retrying(policy, PASSING).wait_s(httpx.ConnectError("refused"), 1) for _ in range(20)}
    assert len(waits) > 1 and all(1.0 <= wait <= 2.0 for wait in waits)


def test_retry_after_takes_seconds_or_a_date_and_is_bounded():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("7", now) == 7.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert retry_after_seconds("99999", now) == 600.0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None


def test_the_connect_timeout_is_capped_and_never_longer_than_the_request_timeout():
    assert http_timeout(600.0).connect == 10.0 and http_timeout(600.0).read == 600.0
    assert http_timeout(2.0).connect == 2.0
