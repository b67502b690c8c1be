"""Waiting out an actor restart. Ray restarts a dead actor (`max_restarts`) but answers calls made
while it restarts with `ActorUnavailableError`; callers that can wait (the trainer publishing an
adapter, the driver asking after the reward worker) retry until the actor is back."""

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("cxr_rl.ray")


def get_through_restarts(
    call: Callable[[], Any], what: str, timeout_s: float = 900.0, poll_s: float = 2.0
) -> Any:
    """`ray.get(call())`, repeated while the actor is restarting (a permanently dead one still raises)."""
    import ray
    from ray.exceptions import ActorUnavailableError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return ray.get(call(), timeout=timeout_s)
        except ActorUnavailableError as error:
            if time.monotonic() > deadline:
                raise
            log.warning("%s: actor restarting (%s); retrying", what, str(error).splitlines()[0])
            time.sleep(poll_s)
