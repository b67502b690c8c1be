"""Asking the rollout replicas for G completions per X-ray: the batch is split across replicas and
the requests run concurrently; results come back in the batch's order."""

import base64
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rollout_server.client import RolloutClient
from shared.manifest import ManifestRecord
from shared.schemas import AdapterSelector, ImageRef, RolloutItem, RolloutRequest, RolloutResult


def rollout_item(record: ManifestRecord, manifest_dir: Path, prompt_format: str) -> RolloutItem:
    data = record.image_path(manifest_dir).read_bytes()
    return RolloutItem(
        item_id=record.id, image=ImageRef(b64=base64.b64encode(data).decode()), prompt_format=prompt_format
    )


class RolloutDispatcher:
    def __init__(self, urls: list[str], token: str | None = None, timeout_s: float = 900.0):
        if not urls:
            raise ValueError("no rollout server URL")
        self.token, self.timeout_s = token, timeout_s
        self.clients = [RolloutClient(url, token=token, timeout_s=timeout_s) for url in urls]
        self._pool = ThreadPoolExecutor(max_workers=len(urls))

    def urls(self) -> list[str]:
        return [client.base_url for client in self.clients]

    def reconnect(self, urls: list[str]) -> list[int]:
        """Follow the replicas to their addresses now (Ray restarts a replica on a new port);
        returns the indices of those that moved."""
        if len(urls) != len(self.clients):
            raise ValueError(f"{len(urls)} replica addresses for {len(self.clients)} replicas")
        moved = [index for index, url in enumerate(urls) if url.rstrip("/") != self.clients[index].base_url]
        for index in moved:
            self.clients[index].close()
            self.clients[index] = RolloutClient(urls[index], token=self.token, timeout_s=self.timeout_s)
        return moved

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        for client in self.clients:
            client.close()

    def sample(
        self,
        items: list[RolloutItem],
        *,
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        seed: int,
        adapter: AdapterSelector,
    ) -> list[RolloutResult]:
        share = -(-len(items) // len(self.clients))
        chunks = [(start, items[start : start + share]) for start in range(0, len(items), share)]

        def ask(client: RolloutClient, start: int, chunk: list[RolloutItem]) -> list[RolloutResult]:
            request = RolloutRequest(
                items=chunk, n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                seed=seed + start,  # the server adds each item's index: seeds follow the batch order
                adapter=adapter,
            )  # fmt: skip
            return client.rollouts(request).results

        futures = [
            self._pool.submit(ask, client, start, chunk)
            for client, (start, chunk) in zip(self.clients, chunks, strict=False)
        ]
        return [result for future in futures for result in future.result()]


def served_policies(results: list[RolloutResult]) -> set[tuple[str | None, int | None]]:
    """(adapter name, version) of every completion, as the server reports what produced it."""
    return {(c.adapter_name, c.adapter_version) for result in results for c in result.completions}


class StalePolicyError(RuntimeError):
    """The rollout server answered with completions of a policy version other than the one asked."""

    def __init__(self, step: int, wanted: tuple[str, int], served: set[tuple[str | None, int | None]]):
        got = ", ".join(f"{name} v{version}" for name, version in sorted(served, key=str))
        super().__init__(
            f"step {step} asked the rollout server for {wanted[0]} v{wanted[1]} but got completions of {got}: "
            "a replica serves a stale policy (it missed an adapter update); the batch is refused, since "
            "its importance ratios and KL would be taken against the wrong policy"
        )
