"""Reward plugins for the tests, loaded by import path ('tests.unit.rewards.test_rewards_plugins:Name')
the way a user's plugin is. No tests here."""

from typing import Any

from rewards.protocol import ScoredItem
from shared.schemas import RewardItem


class LabelCountReward:
    """Reward = number of ground-truth labels; state counts the batches it has scored."""

    name = "label-count"
    version = "test-1"

    def __init__(self, config: dict[str, Any] | None = None):
        self.config = config or {}

    def score(self, items: list[RewardItem], state: dict[str, Any] | None) -> tuple[list[ScoredItem], dict]:
        if any(item.metadata.get("fail") for item in items):
            raise RuntimeError("asked to fail")
        batches = (state or {}).get("batches", 0) + 1
        return [ScoredItem(float(len(item.labels)), {"labels": float(len(item.labels))}) for item in items], {
            "batches": batches
        }


class RaisingReward(LabelCountReward):
    name = "raising"

    def score(self, items, state):
        raise ZeroDivisionError("plugin bug")


class NaNReward(LabelCountReward):
    name = "nan"

    def score(self, items, state):
        return [ScoredItem(float("nan"), {"x": 1.0}) for _ in items], {"batches": 99}


class NaNComponentReward(LabelCountReward):
    name = "nan-component"

    def score(self, items, state):
        return [ScoredItem(1.0, {"x": float("inf")}) for _ in items], {"batches": 99}


class WrongCountReward(LabelCountReward):
    name = "wrong-count"

    def score(self, items, state):
        return [ScoredItem(1.0, {}) for _ in items[:-1]], {"batches": 99}


class NotScoredItems(LabelCountReward):
    name = "dicts"

    def score(self, items, state):
        return [{"total": 1.0} for _ in items], None


class NoScoreMethod:
    name = "incomplete"
    version = "0"


def broken_factory():
    raise RuntimeError("cannot start")
