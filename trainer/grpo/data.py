"""The order RL X-rays are visited in: a seeded permutation per epoch, resumable mid-epoch."""

import numpy as np

from shared.manifest import ManifestRecord


class RlSampler:
    def __init__(self, records: list[ManifestRecord], batch_size: int, seed: int):
        if not records:
            raise ValueError("the RL manifest holds no records")
        self.records, self.batch_size, self.seed = records, batch_size, seed
        self.epoch, self.position = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.records))

    def next_batch(self) -> list[ManifestRecord]:
        batch = []
        while len(batch) < self.batch_size:
            if self.position == len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            batch.append(self.records[self._order[self.position]])
            self.position += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation(self.epoch)
