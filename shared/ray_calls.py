"""Talking to a Ray cluster: connecting to one by address, and waiting out an actor restart.

Ray restarts a dead actor (`max_restarts`) but answers calls made while it restarts with
`ActorUnavailableError`; callers that can wait (the trainer publishing an adapter, the driver asking
after the reward worker) retry until the actor is back."""

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("cxr_rl.ray")


def get_through_restarts(
    call: Callable[[], Any], what: str, timeout_s: float = 900.0, poll_s: float = 2.0
) -> Any:
    """`ray.get(call())`, repeated while the actor is restarting (a permanently dead one still raises)."""
    # Ray only where a Ray call is made: every process imports shared/
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


def get_all_through_restarts(
    calls: list[Callable[[], Any]], what: str, timeout_s: float = 900.0
) -> list[Any]:
    """`get_through_restarts` for several actors at once: all calls start together (replicas load
    in parallel); one that meets a restarting actor is made again once the actor is back."""
    # Ray only where a Ray call is made: every process imports shared/
    import ray
    from ray.exceptions import ActorUnavailableError

    pending = [call() for call in calls]
    results = []
    for call, reference in zip(calls, pending, strict=True):
        try:
            results.append(ray.get(reference, timeout=timeout_s))
        except ActorUnavailableError as error:
            log.warning("%s: actor restarting (%s); retrying", what, str(error).splitlines()[0])
            results.append(get_through_restarts(call, what, timeout_s))
    return results


def connect_to_cluster(address: str, namespace: str, **init_options: Any) -> None:
    """`ray.init(address=...)` that also reaches a `ray start --head` cluster with token auth.

    Ray 2.60's `ray start` turns token authentication on whenever a token exists on the machine
    (`~/.ray/auth_token`, left by any earlier local `ray.init()`, or `RAY_AUTH_TOKEN[_PATH]`), but
    a client given an explicit address sends the token only when `RAY_AUTH_MODE=token`: Ray infers
    that for `address="auto"` alone, and the driver is refused. A client in token mode also reaches
    clusters without auth, so with the mode unset and a token at hand, we apply Ray's own "auto"
    rule to every address (an explicit RAY_AUTH_MODE is left as it is).
    """
    import ray
    from ray._private.authentication.authentication_token_setup import (  # pinned Ray; no public API
        maybe_enable_token_auth_if_token_available,
    )

    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    ray.init(address=address, namespace=namespace, **init_options)
