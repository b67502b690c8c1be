"""vLLM's CPU worker as the server runs it: its wait for the next engine step kept short, and, with
`EngineConfig.cpu_lora_ops: grouped`, the LoRA ops of `rollout_server.cpu_lora` in place.

On CPU the server names one of these classes as vLLM's `worker_cls` (`rollout_server.engine.
worker_class`). vLLM imports it inside the engine's worker process, where the model runs, and builds
it before that process's message queues, so both changes are in place before the first step; the
server process never imports it (it loads vLLM's worker). `worker_extension_cls` stays free for the
methods mixed into whichever worker runs (`rollout_server.worker_probe`).

The wait: vLLM's worker reads each step from the engine core through a shared-memory queue and,
after every read, busy-waits for the next one (`sched_yield` in a loop) for a whole second before it
sleeps on a socket (`shm_broadcast.SpinCondition`, `busy_loop_s=1`). On a GPU host that is one of
many cores. On a CPU machine shared with the GRPO trainer, whose step follows the rollouts at once,
the idle worker held a core the trainer needed (`python -m benchmarks.grpo_step` counts the CPU of
each process; `tests/integration/test_rollout_server_idle_cpu.py`). Here the worker busy-waits
BUSY_WAIT_S: the steps of a running batch follow each other within it, and a finished batch frees
the core within it.

Past the busy wait the worker sleeps on a socket that the engine core pings after each write, and
looks at the queue again at the latest after vLLM's recheck interval (5 s) in case a ping was
missed. Pings can be missed: with only the 5 ms wait, one benchmark step took 5.7 s against 0.7 s.
So this process rechecks every RECHECK_MS: a missed ping costs at most that, and an idle worker's
rechecks cost microseconds.
"""

import logging
from typing import Any

from vllm.v1.worker.cpu_worker import CPUWorker

from rollout_server import cpu_lora

log = logging.getLogger(f"vllm.{__name__}")  # under vLLM's logger: its worker prints what this did
BUSY_WAIT_S = 0.005
RECHECK_MS = 20


def shorten_busy_wait(seconds: float = BUSY_WAIT_S, recheck_ms: int = RECHECK_MS) -> str:
    """Message queues this process creates from now on busy-wait at most `seconds` after a read, and
    every queue of this process looks again at least every `recheck_ms` while it sleeps; returns what
    was done, in words."""
    # vLLM (seconds to import) loads where the engine runs
    import vllm
    from vllm.distributed.device_communicators import shm_broadcast

    if not vllm.__version__.startswith(cpu_lora.WRITTEN_FOR):
        return f"vLLM {vllm.__version__}: its busy wait left as it is (shortened for {cpu_lora.WRITTEN_FOR}x)"
    condition = shm_broadcast.SpinCondition
    original = getattr(condition, "cxr_rl_original_init", condition.__init__)

    def __init__(
        self: Any, is_reader: bool, context: Any, notify_address: str, busy_loop_s: float = 1
    ) -> None:
        original(self, is_reader, context, notify_address, busy_loop_s=min(busy_loop_s, seconds))

    condition.cxr_rl_original_init = original
    condition.__init__ = __init__
    # read at each wait by the queue's timeout (`ReadTimeoutWithWarnings.timeout_ms`)
    shm_broadcast.SHM_READER_RECHECK_INTERVAL_MS = min(
        shm_broadcast.SHM_READER_RECHECK_INTERVAL_MS, recheck_ms
    )
    return (
        f"vLLM's worker busy-waits {seconds * 1000:g} ms for its next step, not 1 s, and rechecks its queue "
        f"every {recheck_ms} ms while it sleeps (rollout_server/cpu_worker.py)"
    )


class QuietCpuWorker(CPUWorker):
    """vLLM's CPU worker that frees its core within BUSY_WAIT_S of its last step."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        log.info(shorten_busy_wait())


class GroupedLoraCpuWorker(QuietCpuWorker):
    """The quiet CPU worker with one matrix product per adapter in the batch for the LoRA deltas."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cxr_rl_lora_ops_installed = cpu_lora.install()

    def cxr_rl_lora_ops(self) -> str:
        """What `cpu_lora.install()` did in this worker, in words (`collective_rpc("cxr_rl_lora_ops")`)."""
        return self.cxr_rl_lora_ops_installed
