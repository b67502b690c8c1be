"""The batches of GRPO steps: the X-rays drawn, sampled by the rollout replicas with the adapter
version read back from the completions, now or one step ahead.

Rollouts one step ahead (`grpo.max_staleness: 1`): the next step's X-rays are sampled by the last
published adapter version in a background thread while the trainer trains on this step's batch.

Step k+1 then trains version k+1 on completions of version k. Its importance ratio takes the
behaviour policy's logprobs, those of the version that sampled (read from the completions, never
assumed), and the clip bounds it; the KL term is unchanged. At most one batch is in flight, so no
batch is more than one version older than the policy it trains. The checkpoint of a step keeps the
data order from before the batch in flight: a resumed run draws the same X-rays next and samples
them with its checkpoint's version (on-policy for that one step), so it is not bit-identical to an
uninterrupted overlapped run.

The sampling is HTTP to the rollout replicas; the thread only waits on it, and a failure (a
replica restarting, a stale version) surfaces when the trainer takes the batch, which then samples
it again, on-policy, with the usual recovery.
"""

import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from rollout_server.client import RolloutServerError
from shared.manifest import ManifestRecord
from shared.schemas import AdapterSelector, RolloutItem, RolloutResult
from trainer.grpo.config import GrpoConfig
from trainer.grpo.data import RlSampler
from trainer.rollouts import RolloutDispatcher, StalePolicyError, rollout_item, served_policies

log = logging.getLogger("cxr_rl.grpo")
ROLLOUT_ATTEMPTS = 3
RECOVERABLE_STATUS = (404, 500, 502, 503, 504)  # a replica restarted (version gone) or is restarting


@dataclass
class DrawnBatch:
    """The X-rays of one GRPO step, drawn from the RL sampler on the trainer's thread."""

    step: int  # the GRPO step (1-based) they are drawn for
    records: list[ManifestRecord]
    images: list[bytes]
    items: list[RolloutItem]
    sampler_state: dict[str, Any]  # the RL sampler's state before they were drawn


@dataclass
class SampledBatch:
    drawn: DrawnBatch
    results: list[RolloutResult]
    version: int  # the adapter version the server says produced every completion
    sample_s: float  # wall time of the sampling (in the background when prefetched)


class PrefetchFailed(RuntimeError):
    """The sampling of a prefetched batch failed; `drawn` is what to sample again."""

    def __init__(self, drawn: DrawnBatch, error: BaseException):
        super().__init__(f"rollouts prefetched for step {drawn.step} failed: {error}")
        self.drawn = drawn


class RolloutPrefetch:
    """One batch sampled in a background thread; `take` waits for it."""

    def __init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="rollout-prefetch"
        )
        self._pending: concurrent.futures.Future[SampledBatch] | None = None
        self._drawn: DrawnBatch | None = None

    @property
    def pending(self) -> DrawnBatch | None:
        """The batch in flight (its X-rays), if any."""
        return self._drawn

    def start(self, drawn: DrawnBatch, sample: Callable[[DrawnBatch], SampledBatch]) -> None:
        if self._drawn is not None:
            raise RuntimeError(f"a batch for step {self._drawn.step} is already in flight")
        self._pending, self._drawn = self._pool.submit(sample, drawn), drawn

    def take(self) -> SampledBatch:
        """The batch in flight, once sampled; PrefetchFailed if its sampling failed."""
        if self._pending is None or self._drawn is None:
            raise RuntimeError("no batch in flight")
        future, drawn = self._pending, self._drawn
        self._pending = self._drawn = None
        try:
            return future.result()
        except Exception as error:
            raise PrefetchFailed(drawn, error) from error

    def wait(self) -> None:
        """Until the batch in flight is sampled (or failed), keeping it."""
        if self._pending is not None:
            concurrent.futures.wait([self._pending])

    def discard(self) -> None:
        """Wait for the batch in flight and drop it (the run stops before its step)."""
        if self._pending is None:
            return
        try:
            self.take()
        except PrefetchFailed as failed:  # nothing trains on it: a failure only needs saying
            log.warning("%s; dropped", failed)

    def close(self) -> None:
        self.discard()
        self._pool.shutdown(wait=True)


class StepBatches:
    """Draws each step's X-rays and has the replicas sample them. `dispatcher` and `recovery` are
    read at each call (the trainer may replace its dispatcher when replicas restart)."""

    def __init__(
        self,
        config: GrpoConfig,
        sampler: RlSampler,
        manifest_dir: Path,
        dispatcher: Callable[[], RolloutDispatcher],
        recovery: Callable[[], Callable[[int], None] | None],
    ):
        self.config, self.sampler, self.manifest_dir = config, sampler, manifest_dir
        self.dispatcher, self.recovery = dispatcher, recovery
        self.prefetch = RolloutPrefetch()

    def sample(
        self, items: list[RolloutItem], *, n: int, max_tokens: int, seed: int, version: int, step: int,
        recover: bool = True,
    ) -> list[RolloutResult]:  # fmt: skip
        """Completions of adapter `version` for GRPO step `step`, read back from what the server says
        produced them: a replica that answers with another version (one that missed an update) gets
        the version reloaded and is asked again; then the batch is refused. `recover=False`: one
        attempt, no reload (the prefetch thread: the trainer samples again when it takes the batch)."""
        sampling, wanted = self.config.sampling, (self.config.adapter_name, version)
        selector = AdapterSelector(name=self.config.adapter_name, version=version)
        for attempt in range(ROLLOUT_ATTEMPTS):
            recover_replicas = self.recovery() if recover else None
            last = recover_replicas is None or attempt + 1 == ROLLOUT_ATTEMPTS
            try:
                results = self.dispatcher().sample(
                    items, n=n, temperature=sampling.temperature, top_p=sampling.top_p,
                    max_tokens=max_tokens, seed=seed, adapter=selector,
                )  # fmt: skip
            except (httpx.TransportError, RolloutServerError) as error:
                recoverable = not isinstance(error, RolloutServerError) or error.status in RECOVERABLE_STATUS
                if not recoverable or last:
                    raise
                log.warning("rollout failed (%s); reloading version %d and retrying", error, version)
                recover_replicas(version)
                continue
            served = served_policies(results)
            if served == {wanted}:
                return results
            error = StalePolicyError(step, wanted, served)
            if last:
                raise error
            log.warning("%s; reloading version %d and retrying", error, version)
            recover_replicas(version)
        raise AssertionError("unreachable")

    def draw(self, step: int) -> DrawnBatch:
        """The X-rays of GRPO step `step`, drawn now, on this thread."""
        state = self.sampler.state_dict()
        records = self.sampler.next_batch()
        images = [record.image_path(self.manifest_dir).read_bytes() for record in records]
        items = [rollout_item(record, self.manifest_dir, self.config.prompt_format) for record in records]
        return DrawnBatch(step, records, images, items, state)

    def sample_batch(self, drawn: DrawnBatch, version: int, recover: bool = True) -> SampledBatch:
        sampling, started = self.config.sampling, time.perf_counter()
        results = self.sample(
            drawn.items, n=sampling.group_size, max_tokens=sampling.max_tokens, version=version,
            seed=self.config.seed * 1_000_003 + (drawn.step - 1) * 1_009, step=drawn.step, recover=recover,
        )  # fmt: skip
        return SampledBatch(drawn, results, version, time.perf_counter() - started)

    def next_batch(self, version: int) -> SampledBatch:
        """The batch to train policy `version` on: the one sampled while the last step trained (by
        the version then live), else one sampled now by `version`. A prefetch that failed (a replica
        restarting, a stale version) is sampled again, now, with the usual recovery."""
        if self.prefetch.pending is None:
            return self.sample_batch(self.draw(version + 1), version)
        try:
            batch = self.prefetch.take()
        except PrefetchFailed as failed:
            log.warning("%s; sampling them again with version %d", failed, version)
            return self.sample_batch(failed.drawn, version)
        if not 0 <= version - batch.version <= self.config.max_staleness:
            raise RuntimeError(
                f"step {batch.drawn.step}: rollouts of version {batch.version} for policy version {version}, "
                f"more than max_staleness={self.config.max_staleness} behind"
            )
        return batch

    def start_next(self, version: int) -> None:
        """Draw the next step's X-rays now and have `version` (the one live) sample them meanwhile."""
        drawn = self.draw(version + 2)
        self.prefetch.start(drawn, lambda batch: self.sample_batch(batch, version, recover=False))

    def sampler_state(self) -> dict[str, Any]:
        """The data order a checkpoint keeps: from before the X-rays in flight (drawn again on resume)."""
        in_flight = self.prefetch.pending
        return in_flight.sampler_state if in_flight is not None else self.sampler.state_dict()
