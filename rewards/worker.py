"""A reward function served by a Ray actor that Ray restarts when it dies.

The actor keeps no state between calls (the caller sends it in each `RewardRequest`), so when Ray
restarts a killed actor and retries the call in flight (`max_task_retries`), the retried batch is
scored from the same state and gives the same result: it is scored once.
"""

from typing import Any

import ray
from ray.actor import ActorHandle

from rewards.protocol import reward_scale, score_request
from rewards.registry import load_reward
from shared.schemas import RewardRequest, RewardResult


class RewardWorker:
    """One reward function; `score` answers a `RewardRequest` with a checked `RewardResult`."""

    def __init__(self, spec: str, config: dict[str, Any] | None = None):
        self.spec = spec
        self.reward = load_reward(spec, config)

    def score(self, request: RewardRequest) -> RewardResult:
        return score_request(self.reward, request)

    def describe(self) -> dict[str, str]:
        """Which reward this is, its scale, and which process (a restarted worker has another pid)."""
        import os

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
        describe_worker(actor)
    return actor


def describe_worker(actor: ActorHandle, timeout_s: float = 120.0) -> dict[str, str]:
    """The worker's reward name and version; its start-up error as a `RewardError`."""
    from rewards.client import unwrap_ray_error

    try:
        return ray.get(actor.describe.remote(), timeout=timeout_s)
    except Exception as error:
        raise unwrap_ray_error(error, "reward worker") from None
