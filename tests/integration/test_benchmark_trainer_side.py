"""The trainer-side benchmarks end to end at their smallest size: each prints its figures as the
last line's JSON, and nothing it started (Ray, the vLLM replica, actors) outlives it."""

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.processes import still_running

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def run_watching_descendants(command: list[str]) -> tuple[str, str, list[str]]:
    """Run `command`; its stdout, stderr, and the command lines of descendants still alive after."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    descendants: dict[int, tuple[psutil.Process, str]] = {}
    while process.poll() is None:
        try:
            for child in psutil.Process(process.pid).children(recursive=True):
                descendants[child.pid] = (child, " ".join(child.cmdline()))
        except psutil.Error:  # a child (or the benchmark) ended while being looked at
            pass
        time.sleep(1)
    stdout, stderr = process.communicate()
    assert process.returncode == 0, stderr[-3000:]
    left = still_running([child for child, _ in descendants.values()])  # Ray's go just after the driver
    return stdout, stderr, [command for child, command in descendants.values() if child in left]


def test_sync_benchmark_times_live_publishes_and_stops_ray(tmp_path):
    command = [
        sys.executable, str(ROOT / "benchmarks" / "sync.py"), "--skip-4b", "--publishes", "3", "--warmup", "1",
        "--work-dir", str(tmp_path),
    ]  # fmt: skip
    stdout, _, left = run_watching_descendants(command)
    line = json.loads(stdout.strip().splitlines()[-1])
    assert 0 < line["sync_ms_p50_tiny"] <= line["sync_ms_p95_tiny"]
    # publish-to-live includes the transport and the replica's load (vLLM add_lora and canary)
    assert line["sync_ms_p50_tiny"] > line["transport_ms_p50_tiny"] > 0
    assert line["server_swap_ms_p50_tiny"] > 0 and line["bytes_lora_tiny"] > 0
    assert "sync_ms_p50_4b" not in line and line["publishes"] == 3
    assert left == []


def test_grpo_step_benchmark_splits_our_step_and_stops_ray(tmp_path):
    command = [
        sys.executable, str(ROOT / "benchmarks" / "grpo_step.py"), "--skip-trl", "--steps", "1", "--warmup", "1",
        "--batch-size", "1", "--group-size", "2", "--max-tokens", "8", "--phantom-studies", "4",
        "--torch-threads", "1", "--work-dir", str(tmp_path),
    ]  # fmt: skip
    stdout, _, left = run_watching_descendants(command)
    line = json.loads(stdout.strip().splitlines()[-1])
    assert line["ours_async_step_s"] > 0 and line["async_staleness_max"] == 1  # the overlapped trainer
    assert list(line["threads"]) == ["1"] and line["threads"]["1"]["ours_step_s"] == line["ours_step_s"]
    parts = [line[key] for key in ("rollout_s", "reward_s", "train_s", "sync_s")]
    assert all(part > 0 for part in parts)
    assert sum(parts) <= line["ours_step_s"]
    assert line["trl_step_s"] is None and "TRL: not measured" in stdout
    assert 0 < line["sync_share"] < 1 and len(line["ours_steps_s"]) == 1
    # CPU accounting: the trainer and the replica both worked; the floor is their core-seconds per core
    assert line["ours_trainer_cpu_s"] > 0 and line["ours_engine_cpu_s"] > 0 and line["async_engine_cpu_s"] > 0
    assert line["ours_floor_s"] == pytest.approx(line["ours_core_s"] / line["cores"], abs=1e-3)
    assert 0 < line["ours_sync_prepare_s"] < line["sync_s"]
    assert left == []
