"""The rollout replicas as the driver hands them to the trainer: the seam between the two sides of
the split. The trainer knows this interface, never the rollout server's modules (they bring
FastAPI, uvicorn and vLLM); the driver places the replicas and passes their handles in one of these.
"""

from collections.abc import Sequence
from typing import Any

from shared.ray_calls import get_all_through_restarts


class RolloutReplicas:
    """Ray handles of rollout server actors (rollout_server/actor.py), in replica order. Each answers
    `start()` with its HTTP address (starting a replica Ray restarted, on a new port), `adapters()`,
    `load_adapter(update)` and `forget_adapter(name)`."""

    def __init__(self, handles: Sequence[Any]):
        self.handles = list(handles)

    def __len__(self) -> int:
        return len(self.handles)

    def urls(self) -> list[str]:
        """The replicas' HTTP addresses as they are now, starting any that Ray restarted."""
        return get_all_through_restarts(
            [handle.start.remote for handle in self.handles], "starting the rollout replicas"
        )
