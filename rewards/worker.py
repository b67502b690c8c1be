"""A reward function served by a Ray actor that Ray restarts when it dies.

The actor keeps no state between calls (the caller sends it in each `RewardRequest`), so when Ray
restarts a killed actor and retries the call in flight (`max_task_retries`), the retried batch is
scored from the same state and gives the same result: it is scored once.

A Ray actor whose constructor raises reaches its caller only as a dead actor with a formatted
traceback; so a worker that cannot load its reward keeps the `RewardError` and raises it from every
call instead, where Ray hands the caller the error itself (`unwrap_ray_error`).
"""

import os
from typing import Any

import ray
import ray.exceptions
from ray.actor import ActorHandle

from rewards.protocol import RewardError, RewardFunction, reward_scale, score_request
from rewards.registry import load_reward
from shared.errors import UserError
from shared.schemas import RewardRequest, RewardResult


def unwrap_ray_error(error: Exception, what: str) -> RewardError:
    """A Ray failure as one clear `RewardError`: the reward's own message when it raised one."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, UserError):  # before the next test: RayTaskError(RewardError) is a RewardError too
        return RewardError(str(cause))
    if isinstance(error, RewardError):
        return error
    if isinstance(error, ray.exceptions.GetTimeoutError):
        return RewardError(f"{what}: no answer in time ({error})")
    if isinstance(error, ray.exceptions.RayTaskError) and cause is not None:
        return RewardError(f"{what} failed: {cause!r}")
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = lines[-1] if lines else type(error).__name__
    return RewardError(f"{what} failed: {type(error).__name__}: {reason}")


class RewardWorker:
    """One reward function; `score` answers a `RewardRequest` with a checked `RewardResult`."""

    def __init__(self, spec: str, config: dict[str, Any] | None = None):
        self.spec = spec
        try:
            self._loaded: RewardFunction | UserError = load_reward(spec, config)
        except UserError as error:
            self._loaded = error

    @property
    def reward(self) -> RewardFunction:
        if isinstance(self._loaded, UserError):
            raise self._loaded
        return self._loaded

    def score(self, request: RewardRequest) -> RewardResult:
        return score_request(self.reward, request)

    def describe(self) -> dict[str, str]:
        """Which reward this is, its scale, and which process (a restarted worker has another pid)."""
        return {
            "spec": self.spec,
            "name": str(self.reward.name),
            "version": str(self.reward.version),
            "scale": str(reward_scale(self.reward)),
            "pid": str(os.getpid()),
        }


def start_reward_worker(
    spec: str,
    config: dict[str, Any] | None = None,
    *,
    max_restarts: int = 3,
    max_task_retries: int = 3,
    num_cpus: float = 0.5,
    name: str | None = None,
    check: bool = True,
) -> ActorHandle:
    """Start a `RewardWorker` actor in the connected Ray cluster. With `check`, wait until it has
    loaded the reward, so a plugin that does not import fails here as a `RewardError`."""
    options: dict[str, Any] = {
        "max_restarts": max_restarts,
        "max_task_retries": max_task_retries,
        "num_cpus": num_cpus,
    }
    if name is not None:
        options["name"] = name
    actor = ray.remote(RewardWorker).options(**options).remote(spec, config)
    if check:
        try:
            describe_worker(actor)
        except RewardError:
            ray.kill(actor)
            raise
    return actor


def describe_worker(actor: ActorHandle, timeout_s: float = 120.0) -> dict[str, str]:
    """The worker's reward name and version; its start-up error as a `RewardError`."""
    try:
        return ray.get(actor.describe.remote(), timeout=timeout_s)
    except Exception as error:
        raise unwrap_ray_error(error, "reward worker") from None
