"""An idle rollout server leaves the cores to the trainer. vLLM's engine worker busy-waits for its
next step for a second after every step (`shm_broadcast.SpinCondition`, `busy_loop_s=1`): in GRPO
the trainer's step follows the rollouts at once, so on a CPU machine the spinning worker took a core
from training (`python -m benchmarks.grpo_step` counts it). The server's CPU worker keeps that wait
to a few milliseconds (`rollout_server.cpu_busy_wait`)."""

import time

import psutil
import pytest

from shared.schemas import ImageRef, RolloutItem, RolloutRequest
from tests.support import b64, noise_xray, png_bytes

pytestmark = pytest.mark.integration

IDLE_S = 2.0
# A worker that spins after the last step burns about a core for a second of the idle window
# (less on a machine busy with other work, never near zero); an idle one uses a few milliseconds.
MOST_IDLE_CPU_S = 0.25


def cpu_s(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def test_the_server_uses_no_core_while_idle_after_a_rollout(rollout_server, client):
    item = RolloutItem(item_id="idle", image=ImageRef(b64=b64(png_bytes(noise_xray(3)))))
    client.rollouts(RolloutRequest(items=[item], n=2, max_tokens=8, seed=0))
    server = psutil.Process(rollout_server.process.pid)
    processes = [server, *server.children(recursive=True)]
    before = cpu_s(processes)
    time.sleep(IDLE_S)
    used = cpu_s(processes) - before
    assert used < MOST_IDLE_CPU_S, (
        f"the server's processes used {used:.2f} CPU-s in the {IDLE_S:.0f} s after a rollout, with nothing "
        f"to do: {', '.join(p.name() for p in processes if p.is_running())}"
    )
