"""The trainer's side of reward scoring: `RewardClient.score(batch_id, items) -> RewardResult`.

The client carries each reward's state (the nuanced window) between batches, keyed by reward name,
and checkpoints it (`state_dict` / `load_state_dict`). It sends the state with every request and
adopts the returned state only once the result has passed its checks (one finite total per item,
the right batch): a batch that fails is not recorded and leaves the state as it was. Scoring the
batch that was scored last again returns the same result without advancing the state.

Backends: a reward in this process, a Ray actor (`rewards.worker`), an HTTP service
(`rewards.http_service`, with the project's retry policy, `shared.http_retry`), or the `RewardRouter`, asked before
each batch which of the others to use (swapping rewards while training runs).
"""

import hashlib
from typing import Any, Protocol

import httpx
from pydantic import ValidationError

from rewards.protocol import RewardError, RewardFunction, check_result, score_request
from shared.http_retry import DEFAULT_RETRY, Retrying, RetryPolicy, http_timeout
from shared.schemas import RewardItem, RewardRequest, RewardResult

SERVER_ERRORS = range(500, 600)


class RewardBackend(Protocol):
    def reward_name(self) -> str: ...

    def score(self, request: RewardRequest) -> RewardResult: ...

    def close(self) -> None: ...


class InProcessBackend:
    def __init__(self, reward: RewardFunction):
        self.reward = reward

    def reward_name(self) -> str:
        return str(self.reward.name)

    def score(self, request: RewardRequest) -> RewardResult:
        return score_request(self.reward, request)

    def close(self) -> None:
        pass


class RayActorBackend:
    """A `RewardWorker` actor; Ray restarts it and retries the call if it dies mid-batch."""

    def __init__(self, actor: Any, timeout_s: float = 300.0):
        self.actor = actor
        self.timeout_s = timeout_s
        self._name: str | None = None

    def reward_name(self) -> str:
        if self._name is None:
            from rewards.worker import describe_worker  # Ray loads only for a Ray backend: start-up speed

            self._name = describe_worker(self.actor, self.timeout_s)["name"]
        return self._name

    def score(self, request: RewardRequest) -> RewardResult:
        import ray  # only for a Ray backend: keeps start-up fast

        from rewards.worker import unwrap_ray_error  # likewise

        try:
            return ray.get(self.actor.score.remote(request), timeout=self.timeout_s)
        except Exception as error:
            raise unwrap_ray_error(error, f"reward worker on batch {request.batch_id!r}") from None

    def close(self) -> None:
        pass


class HttpBackend:
    """`POST {url}/v1/rewards`; connection failures, timeouts and 5xx answers are retried,
    4xx answers (bad request, a reward that raised) are not."""

    def __init__(self, url: str, timeout_s: float = 60.0, retry: RetryPolicy = DEFAULT_RETRY):
        self.url = url.rstrip("/")
        self.retrying = Retrying(retry, SERVER_ERRORS)
        self._http = httpx.Client(timeout=http_timeout(timeout_s))
        self._name: str | None = None

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.retrying.send(lambda: self._http.request(method, self.url + path, **kwargs))
        except httpx.TransportError as error:
            failure = f"{type(error).__name__}: {error}"
        else:
            if response.status_code not in SERVER_ERRORS:
                return response
            failure = f"HTTP {response.status_code}: {response.text[:300]}"
        attempts = self.retrying.policy.attempts
        raise RewardError(f"reward service {self.url}{path}: {failure} (after {attempts} attempts)")

    def reward_name(self) -> str:
        if self._name is None:
            response = self._request("GET", "/health")
            if response.status_code != 200:
                raise RewardError(f"reward service {self.url}/health: HTTP {response.status_code}")
            self._name = str(response.json()["reward_name"])
        return self._name

    def score(self, request: RewardRequest) -> RewardResult:
        response = self._request(
            "POST",
            "/v1/rewards",
            content=request.model_dump_json(),
            headers={"content-type": "application/json"},
        )
        if response.status_code != 200:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise RewardError(f"reward service {self.url}: HTTP {response.status_code}: {str(detail)[:500]}")
        try:
            result = RewardResult.model_validate_json(response.content)
        except ValidationError as error:
            raise RewardError(
                f"reward service {self.url} answered with an invalid RewardResult: {error}"
            ) from None
        if result.reward_name != self._name:
            self._name = None  # the service changed reward: ask again next time
        return result

    def close(self) -> None:
        self._http.close()


class RouterBackend:
    """Asks the `RewardRouter` for the current target before each batch."""

    def __init__(self, router: Any, timeout_s: float = 300.0, http_options: dict[str, Any] | None = None):
        self.router = router
        self.timeout_s = timeout_s
        self.http_options = http_options or {}
        self.generation: int | None = None
        self._backend: RayActorBackend | HttpBackend | None = None

    def _current(self) -> RayActorBackend | HttpBackend:
        import ray  # only for a Ray backend: keeps start-up fast

        from rewards.worker import unwrap_ray_error  # likewise

        try:
            target = ray.get(self.router.current.remote(), timeout=self.timeout_s)
        except Exception as error:
            raise unwrap_ray_error(error, "reward router") from None
        if target.generation != self.generation or self._backend is None:
            if self._backend is not None:
                self._backend.close()
            if target.url is not None:
                self._backend = HttpBackend(target.url, **self.http_options)
            else:
                self._backend = RayActorBackend(target.actor, self.timeout_s)
            self.generation = target.generation
        return self._backend

    def reward_name(self) -> str:
        return self._current().reward_name()

    def score(self, request: RewardRequest) -> RewardResult:
        assert self._backend is not None, "reward_name() resolves the backend before score()"
        return self._backend.score(request)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()


def _fingerprint(items: list[RewardItem]) -> str:
    digest = hashlib.sha256()
    for item in items:
        digest.update(item.model_dump_json().encode())
        digest.update(b"\0")
    return digest.hexdigest()


class RewardClient:
    def __init__(self, backend: RewardBackend):
        self.backend = backend
        self.states: dict[str, dict[str, Any] | None] = {}
        self.batches_scored = 0
        self._last: dict[str, Any] | None = None  # batch_id, fingerprint, result of the last batch

    @classmethod
    def in_process(cls, reward: RewardFunction) -> "RewardClient":
        return cls(InProcessBackend(reward))

    @classmethod
    def for_actor(cls, actor: Any, timeout_s: float = 300.0) -> "RewardClient":
        return cls(RayActorBackend(actor, timeout_s))

    @classmethod
    def for_url(cls, url: str, **http_options: Any) -> "RewardClient":
        return cls(HttpBackend(url, **http_options))

    @classmethod
    def for_router(cls, router: Any, timeout_s: float = 300.0, **http_options: Any) -> "RewardClient":
        return cls(RouterBackend(router, timeout_s, http_options))

    def score(self, batch_id: str, items: list[RewardItem]) -> RewardResult:
        fingerprint = _fingerprint(items)
        if self._last is not None and self._last["batch_id"] == batch_id:
            if self._last["fingerprint"] != fingerprint:
                raise RewardError(f"batch {batch_id!r} was already scored with different items")
            return RewardResult.model_validate(self._last["result"])
        name = self.backend.reward_name()
        request = RewardRequest(batch_id=batch_id, items=items, state=self.states.get(name))
        result = check_result(self.backend.score(request), request)
        if result.reward_name != name:
            raise RewardError(
                f"batch {batch_id!r}: sent state for reward {name!r} but {result.reward_name!r} answered "
                "(the reward changed mid-batch); score the batch again"
            )
        self.states[name] = result.state
        self.batches_scored += 1
        self._last = {
            "batch_id": batch_id,
            "fingerprint": fingerprint,
            "result": result.model_dump(mode="json"),
        }
        return result

    def state_dict(self) -> dict[str, Any]:
        return {"states": dict(self.states), "batches_scored": self.batches_scored, "last": self._last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            states, batches, last = state["states"], int(state["batches_scored"]), state.get("last")
        except (KeyError, TypeError, ValueError) as error:
            raise RewardError(f"not a RewardClient state dict (missing or bad {error})") from None
        if not isinstance(states, dict):
            raise RewardError("RewardClient state dict: 'states' must map reward names to states")
        self.states, self.batches_scored, self._last = dict(states), batches, last

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "RewardClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
