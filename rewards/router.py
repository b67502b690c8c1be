"""Swapping the reward while training runs: a named Ray actor that says which worker to use.

The `RewardRouter` (actor name "reward-router", in the trainer's namespace) holds the current
target, either a reward spec (served by a `RewardWorker` actor the router starts) or the URL of an
HTTP reward service, and a generation number that grows with every swap. A `RewardClient` in
router mode asks it before each batch, so the first batch after a swap uses the new reward.
`cxr-rl reward swap --name nuanced` connects to the running cluster and calls `swap`.
"""

from typing import Any

import ray
from pydantic import Field
from ray.actor import ActorHandle

from rewards.protocol import RewardError
from rewards.worker import start_reward_worker, unwrap_ray_error
from shared.config import StrictModel
from shared.errors import UserError

ROUTER_NAME = "reward-router"


class RewardTarget(StrictModel, arbitrary_types_allowed=True):
    """Where batches go now: a Ray worker (`actor` set) or an HTTP service (`url` set)."""

    generation: int
    spec: str = Field(description="a reward name, an import path or an http(s) URL")
    config: dict[str, Any] | None = None
    actor: Any = Field(None, description="ActorHandle of the RewardWorker serving `spec`")
    url: str | None = None


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


class RewardRouter:
    def __init__(self, spec: str, config: dict[str, Any] | None = None, worker_options: dict | None = None):
        self._worker_options = worker_options or {}
        self._generation = 0
        # A constructor's error would reach the caller only as a formatted traceback: kept, and
        # raised by `current` as itself (see rewards/worker.py).
        try:
            self._target: RewardTarget | UserError = self._make_target(spec, config)
        except UserError as error:
            self._target = error

    def _make_target(self, spec: str, config: dict[str, Any] | None) -> RewardTarget:
        self._generation += 1
        if is_url(spec):
            return RewardTarget(generation=self._generation, spec=spec, url=spec.rstrip("/"))
        actor = start_reward_worker(spec, config, **self._worker_options)
        return RewardTarget(generation=self._generation, spec=spec, config=config, actor=actor)

    def current(self) -> RewardTarget:
        if isinstance(self._target, UserError):
            raise self._target
        return self._target

    def swap(self, spec: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
        """Point later batches at `spec`. The new worker is started (and its reward loaded) before
        the swap takes effect: a spec that does not load leaves the current target in place."""
        previous = self.current()
        generation = self._generation
        try:
            self._target = self._make_target(spec, config)
        except Exception:
            self._generation = generation
            raise
        # The old worker lives on while a client still holds its handle (a batch in flight there).
        return {"generation": self._target.generation, "spec": spec, "previous": previous.spec}


def start_router(
    spec: str,
    config: dict[str, Any] | None = None,
    *,
    namespace: str | None = None,
    worker_options: dict | None = None,
) -> ActorHandle:
    """Start the named router in the connected Ray cluster (it replaces none: one per namespace)."""
    options: dict[str, Any] = {"name": ROUTER_NAME, "num_cpus": 0, "max_restarts": 0}
    if namespace is not None:
        options["namespace"] = namespace
    router = ray.remote(RewardRouter).options(**options).remote(spec, config, worker_options)
    try:
        ray.get(router.current.remote(), timeout=180)
    except Exception as error:
        ray.kill(router)
        raise unwrap_ray_error(error, "reward router") from None
    return router


def find_router(namespace: str | None = None) -> ActorHandle:
    try:
        return ray.get_actor(ROUTER_NAME, namespace=namespace)
    except ValueError:
        where = f"namespace {namespace!r}" if namespace else "the current namespace"
        raise RewardError(
            f"no reward router named {ROUTER_NAME!r} in {where}; is training running?"
        ) from None


def swap_reward(
    spec: str, config: dict[str, Any] | None = None, namespace: str | None = None
) -> dict[str, Any]:
    """Tell the running router to use `spec` from the next batch on."""
    router = find_router(namespace)
    try:
        return ray.get(router.swap.remote(spec, config), timeout=180)
    except Exception as error:
        raise unwrap_ray_error(error, "reward swap") from None
