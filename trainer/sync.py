"""Publishing LoRA tensors (never base weights) to every rollout replica after an optimizer step.

Over Ray the tensors go through the object store once (`ray.put`) and each replica's actor loads
them; no shared filesystem is assumed between nodes, and no NCCL group is needed (two processes
on one GPU cannot join one). Over HTTP (a standalone server) they go as a raw safetensors upload
(`RolloutClient.load_adapter`: multipart, its own size limit, an idempotency key its retries repeat).
"""

import time
from dataclasses import dataclass
from typing import Any, Protocol

from rollout_server.client import RolloutServerError
from shared.ray_calls import get_all_through_restarts, get_through_restarts
from shared.schemas import AdapterInfo, AdapterUpdate


@dataclass
class PublishResult:
    version: int
    seconds: float  # publish to live on every replica (canary included)
    bytes: int
    replicas: int


class AdapterPublisher(Protocol):
    def publish(self, update: AdapterUpdate) -> PublishResult: ...

    def forget(self, name: str) -> None: ...


def _check_versions(infos: list[AdapterInfo], update: AdapterUpdate) -> int:
    versions = {info.version for info in infos}
    if len(versions) != 1 or (update.version is not None and versions != {update.version}):
        raise RuntimeError(f"replicas report versions {sorted(versions)} after publishing {update.version}")
    return versions.pop()


class RayAdapterPublisher:
    def __init__(self, replicas: list[Any], timeout_s: float = 600.0):
        self.replicas, self.timeout_s = replicas, timeout_s

    def publish(self, update: AdapterUpdate) -> PublishResult:
        # Ray only for Ray replicas: `cxr-rl grpo --server` publishes over HTTP
        import ray

        started = time.perf_counter()
        reference = ray.put(update)
        infos = get_all_through_restarts(
            [lambda r=replica: r.load_adapter.remote(reference) for replica in self.replicas],
            "publishing an adapter",
            self.timeout_s,
        )
        version = _check_versions(infos, update)
        return PublishResult(
            version, time.perf_counter() - started, len(update.safetensors), len(self.replicas)
        )

    def forget(self, name: str) -> None:
        for replica in self.replicas:
            get_through_restarts(
                lambda r=replica: r.forget_adapter.remote(name), "unloading an adapter", self.timeout_s
            )


class HttpAdapterPublisher:
    def __init__(self, clients: list[Any]):
        self.clients = clients

    def publish(self, update: AdapterUpdate) -> PublishResult:
        started = time.perf_counter()
        infos = [client.load_adapter(update) for client in self.clients]
        version = _check_versions(infos, update)
        return PublishResult(
            version, time.perf_counter() - started, len(update.safetensors), len(self.clients)
        )

    def forget(self, name: str) -> None:
        for client in self.clients:
            try:
                client.unload_adapter(name)
            except RolloutServerError as error:
                if error.status != 404:
                    raise
