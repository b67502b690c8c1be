"""A reward plugin that lets a test hold a training run in the middle of a GRPO step of its choosing
('tests.integration.held_reward:HeldReward', loaded by the run's reward worker). No tests here."""

import time
from pathlib import Path
from typing import Any

from rewards.hard import HardReward
from rewards.protocol import ScoredItem
from shared.schemas import RewardItem


class HeldReward:
    """The hard reward, except that while `hold_file` holds a number N, scoring the N-th batch (or a
    later one) waits. The batch count rides in the carried state, so it survives a stop and a
    `--resume` as any reward state does; the test writes or removes the file between runs."""

    name = "held-hard"
    version = "test-1"

    def __init__(self, config: dict[str, Any] | None = None):
        config = dict(config or {})
        self.hold_file = Path(config.pop("hold_file"))
        self.hard = HardReward(config)

    def score(self, items: list[RewardItem], state: dict[str, Any] | None) -> tuple[list[ScoredItem], dict]:
        batch = (state or {}).get("batches", 0) + 1
        while self._held(batch):
            time.sleep(0.2)
        scored, _ = self.hard.score(items, None)
        return scored, {"batches": batch}

    def _held(self, batch: int) -> bool:
        try:
            return batch >= int(self.hold_file.read_text())
        except (FileNotFoundError, ValueError):
            return False
