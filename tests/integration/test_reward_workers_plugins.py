"""A slow reward plugin for the worker tests, loaded by import path inside Ray workers and HTTP
services ('tests.integration.test_reward_workers_plugins:SlowCountingReward'). No tests here."""

import os
import time
from pathlib import Path
from typing import Any

from rewards.protocol import ScoredItem
from shared.schemas import RewardItem


class SlowCountingReward:
    """Reward = number of ground-truth labels. Each attempt appends the worker's pid to
    `attempts_file` (a side effect outside the carried state); the carried state counts the batches
    scored, so a batch scored twice would show in the state. The first attempt (no pid in the file
    yet) takes `sleep_s`; later ones answer at once: a test that kills the worker during the first
    attempt makes it take minutes, so the kill always lands mid-batch, and the retry is quick."""

    name = "slow-counting"
    version = "test-1"

    def __init__(self, config: dict[str, Any] | None = None):
        config = config or {}
        self.sleep_s = float(config.get("sleep_s", 1.0))
        self.attempts_file = Path(config["attempts_file"]) if "attempts_file" in config else None

    def score(self, items: list[RewardItem], state: dict[str, Any] | None) -> tuple[list[ScoredItem], dict]:
        first = True
        if self.attempts_file is not None:
            first = not (self.attempts_file.is_file() and self.attempts_file.read_text().strip())
            with self.attempts_file.open("a") as attempts:
                attempts.write(f"{os.getpid()}\n")
        if first:
            time.sleep(self.sleep_s)
        batches = (state or {}).get("batches", 0) + 1
        return [ScoredItem(float(len(item.labels)), {"labels": float(len(item.labels))}) for item in items], {
            "batches": batches
        }
