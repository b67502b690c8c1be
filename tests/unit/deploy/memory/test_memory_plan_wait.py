"""A (re)starting rollout replica waits for its share of the GPU, or fails naming what holds it.

The GPU here is scripted (this machine has none): a reading of total and free memory and the
processes NVML would list, on a clock that advances only when the waiter sleeps."""

import os

import pytest

from deploy.memory.wait import (
    GpuHolder,
    GpuMemory,
    GpuShareUnavailable,
    ShareWait,
    nvml_reader,
    process_name,
    wait_for_share,
)
from shared.errors import UserError

TOTAL = 79.2
TRAINER = GpuHolder(4242, 46.0, "ray::TrainerActor.grpo_step")
OLD_ENGINE = GpuHolder(5151, 24.5, "VLLM::EngineCore")


class ScriptedGpu:
    """Free memory follows `free` reading by reading (the last one repeats)."""

    def __init__(self, free: list[float], holders: tuple[GpuHolder, ...] = ()):
        self.free, self.holders = list(free), holders
        self.now, self.reads, self.sleeps = 0.0, 0, []

    def read(self) -> GpuMemory:
        value = self.free[min(self.reads, len(self.free) - 1)]
        self.reads += 1
        return GpuMemory(TOTAL, value, self.holders)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def test_waits_until_the_old_engine_lets_go():
    gpu = ScriptedGpu([8.0, 20.0, 33.0], (TRAINER, OLD_ENGINE))
    wait = ShareWait(share=0.4, timeout_s=60, poll_s=2)
    memory = wait_for_share(wait, gpu.read, sleep=gpu.sleep, clock=gpu.clock)
    assert memory.free_gib == 33.0 and gpu.reads == 3 and gpu.sleeps == [2, 2]
    assert wait.need_gib(TOTAL) == pytest.approx(0.4 * TOTAL + 0.6)  # share + vLLM's CUDA context


def test_enough_memory_means_no_wait():
    gpu = ScriptedGpu([40.0])
    wait_for_share(ShareWait(share=0.4, timeout_s=0), gpu.read, sleep=gpu.sleep, clock=gpu.clock)
    assert gpu.sleeps == []


def test_fails_after_the_timeout_naming_who_holds_the_memory():
    gpu = ScriptedGpu([8.0], (OLD_ENGINE, TRAINER))
    with pytest.raises(GpuShareUnavailable) as raised:
        wait_for_share(
            ShareWait(share=0.4, timeout_s=10, poll_s=2), gpu.read, sleep=gpu.sleep, clock=gpu.clock
        )
    message = str(raised.value)
    assert isinstance(raised.value, UserError)  # the driver prints it as one line
    assert gpu.now == 10 and len(gpu.sleeps) == 5
    assert (
        "needs 32.3 GiB of GPU memory free (gpu.rollout_share 0.4 x 79.2 GiB + 0.6 GiB CUDA context)"
        in message
    )
    assert "after 10 s only 8.0 GiB are" in message
    # the largest holder first
    assert message.endswith(
        "held by pid 4242 ray::TrainerActor.grpo_step (46.0 GiB), pid 5151 VLLM::EngineCore (24.5 GiB)"
    )


def test_unlisted_holders_are_said_to_be_invisible():
    gpu = ScriptedGpu([1.0])
    with pytest.raises(GpuShareUnavailable, match="held by no process NVML can list"):
        wait_for_share(ShareWait(share=0.4, timeout_s=0), gpu.read, sleep=gpu.sleep, clock=gpu.clock)


def test_process_names_come_from_their_command_line():
    assert "python" in process_name(os.getpid())
    assert process_name(2**30) == "(not visible from this process)"


def test_without_a_gpu_there_is_nothing_to_wait_for():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert nvml_reader() is None
