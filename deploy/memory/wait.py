"""A rollout replica that waits for its share of the GPU before its engine starts.

After a fault Ray restarts a replica (a fresh process) while the trainer keeps its memory and the
dead replica's engine process may still be letting go of its own. vLLM refuses to start when less
than its share is free ("Free memory on device ... is less than desired GPU memory utilization"),
and a restart budget spent on such refusals ends the run. So a (re)starting replica first waits, up
to `gpu.wait_for_share_s`, for its share plus the CUDA context vLLM creates before it measures, and
otherwise fails naming the processes that hold the GPU. Memory is read through NVML, which creates
no CUDA context in the actor's own process.
"""

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.memory.estimates import VLLM_CUDA_CONTEXT_GIB
from rollout_server.actor import RolloutServerActor
from rollout_server.config import ServerConfig
from shared.errors import UserError

log = logging.getLogger("cxr_rl.rollout_server")
GIB = 1024**3


@dataclass(frozen=True)
class GpuHolder:
    pid: int
    gib: float
    name: str  # its command line, as far as this process can see it


@dataclass(frozen=True)
class GpuMemory:
    total_gib: float
    free_gib: float
    holders: tuple[GpuHolder, ...] = ()


@dataclass(frozen=True)
class ShareWait:
    """What a replica waits for: `share` of the GPU (vLLM's gpu_memory_utilization) plus vLLM's CUDA
    context free, for at most `timeout_s`."""

    share: float
    timeout_s: float
    poll_s: float = 2.0

    def need_gib(self, total_gib: float) -> float:
        return self.share * total_gib + VLLM_CUDA_CONTEXT_GIB


class GpuShareUnavailable(UserError):
    """The replica's share of the GPU did not become free in time."""


def wait_for_share(
    wait: ShareWait,
    read: Callable[[], GpuMemory],
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> GpuMemory:
    """Poll `read` until the share is free and return that reading, or raise GpuShareUnavailable
    naming who holds the memory once `wait.timeout_s` has passed."""
    deadline = clock() + wait.timeout_s
    warned = False
    while True:
        memory = read()
        need = wait.need_gib(memory.total_gib)
        if memory.free_gib >= need:
            return memory
        if clock() >= deadline:
            raise GpuShareUnavailable(shortfall_message(memory, need, wait))
        if not warned:
            log.warning(
                "rollout replica: %.1f GiB free, %.1f GiB needed; waiting up to %.0f s (held by %s)",
                memory.free_gib, need, wait.timeout_s, describe_holders(memory.holders),
            )  # fmt: skip
            warned = True
        sleep(wait.poll_s)


def shortfall_message(memory: GpuMemory, need: float, wait: ShareWait) -> str:
    return (
        f"rollout replica cannot start: vLLM needs {need:.1f} GiB of GPU memory free (gpu.rollout_share "
        f"{wait.share:g} x {memory.total_gib:.1f} GiB + {VLLM_CUDA_CONTEXT_GIB} GiB CUDA context) but after "
        f"{wait.timeout_s:.0f} s only {memory.free_gib:.1f} GiB are; held by {describe_holders(memory.holders)}"
    )


def describe_holders(holders: tuple[GpuHolder, ...]) -> str:
    if not holders:
        return "no process NVML can list (another container, or memory not yet released by the driver)"
    ordered = sorted(holders, key=lambda holder: -holder.gib)
    return ", ".join(f"pid {holder.pid} {holder.name} ({holder.gib:.1f} GiB)" for holder in ordered)


def process_name(pid: int) -> str:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "(not visible from this process)"
    text = " ".join(word.decode(errors="replace") for word in words if word)
    return text[:80] or "(no command line)"


def nvml_reader() -> Callable[[], GpuMemory] | None:
    """A reader of the GPU this process was given (the first of CUDA_VISIBLE_DEVICES), or None where
    there is no NVML or no GPU (CPU machines: nothing to wait for)."""
    try:  # vLLM takes seconds to import: only in the replica that waits, and it may be absent
        from vllm.third_party import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        visible = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0].strip()
        if visible.startswith(("GPU-", "MIG-")):
            handle = pynvml.nvmlDeviceGetHandleByUUID(visible)
        else:
            handle = pynvml.nvmlDeviceGetHandleByIndex(int(visible))
    except (pynvml.NVMLError, ValueError):
        return None

    def read() -> GpuMemory:
        info = pynvml.nvmlDeviceGetMemoryInfo(handle)
        holders = tuple(
            GpuHolder(process.pid, (process.usedGpuMemory or 0) / GIB, process_name(process.pid))
            for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
        )
        return GpuMemory(info.total / GIB, info.free / GIB, holders)

    return read


class ShareWaitingReplica(RolloutServerActor):
    """The rollout server actor, waiting for its GPU share before the engine starts. Ray re-runs the
    constructor of a restarted actor, so every restart waits again."""

    def __init__(self, config: ServerConfig, wait: ShareWait | None = None):
        super().__init__(config)
        self._share_wait = wait
        self._waited: asyncio.Future | None = None

    async def start(self, ready_timeout_s: float = 900.0) -> str:
        if self._share_wait is not None:
            if self._waited is None:  # concurrent and later calls wait for the same check
                self._waited = asyncio.ensure_future(asyncio.to_thread(self._wait_for_share))
            await asyncio.shield(self._waited)
        return await super().start(ready_timeout_s)

    def _wait_for_share(self) -> Any:
        read = nvml_reader()
        if read is None:
            return None
        return wait_for_share(self._share_wait, read)
