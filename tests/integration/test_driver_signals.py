"""Stopping a run as users do: Ctrl-C in the terminal running `scripts/demo.sh`, SIGTERM from a
supervisor, and `--resume` after each.

Each run is held in the middle of a GRPO step (a reward plugin that waits while a file says so), so
the signal lands mid-step however slow the machine. A stop must end every process the run started
(its private Ray cluster, actors, vLLM engines), leave another Ray cluster on the machine alone (the
tests' own), say where the run stopped and how to resume it; the resumed run must carry on from the
last checkpoint and score every step exactly once. While it runs, every port the run's processes
listen on must be on the loopback address.
"""

import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest
import yaml

from tests.integration.test_driver import PROJECT, grpo_steps
from tests.processes import still_running, title, wait_until

pytestmark = pytest.mark.integration
STEPS = 3
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def run_config(run_dir: Path, hold_file: Path) -> dict:
    return {
        "name": "stops",
        "run_dir": str(run_dir),
        "model": "embedded:tiny-medgemma",
        "data": {"phantoms": {"n": 48, "seed": 2}, "sft_format": "only_label"},
        "sft": None,
        "grpo": {
            "prompt_format": "only_label",
            "batch_size": 2,
            "max_steps": STEPS,
            "sampling": {"group_size": 2, "max_tokens": 8},
            "gradient_checkpointing": False,
        },
        "reward": {
            "spec": "tests.integration.held_reward:HeldReward",
            "config": {"hold_file": str(hold_file), "min_tokens": 4},
        },
        "rollout": {"engine": {"max_model_len": 1024}, "placement": {"num_cpus": 0.5}},
        "evaluation": {"max_images": 2, "max_tokens": 8},
    }


def demo(config: Path, log: Path, *extra: str) -> subprocess.Popen:
    """`scripts/demo.sh` as a terminal runs it: its own process group (the foreground job), SIGINT
    at its default (a background child of a non-interactive shell would inherit it ignored)."""
    with log.open("w") as out:
        return subprocess.Popen(
            ["scripts/demo.sh", "--config", str(config), *extra],
            cwd=PROJECT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def run_processes(root: psutil.Process) -> list[psutil.Process]:
    return [root, *root.children(recursive=True)]


def listening_addresses(processes: list[psutil.Process]) -> set[str]:
    addresses = set()
    for process in processes:
        try:
            connections = process.net_connections(kind="inet")
        except psutil.Error:
            continue
        addresses |= {c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN}
    return addresses


@pytest.fixture()
def sentinel_cluster(local_ray):
    """Another Ray cluster on the machine (the tests' own, in this process): it must outlive the run."""

    @local_ray.remote
    def ping() -> int:
        return os.getpid()

    assert local_ray.get(ping.remote(), timeout=300) > 0
    return lambda: local_ray.get(ping.remote(), timeout=300)


def stop_held_run(run: subprocess.Popen, log: Path, run_dir: Path, steps: int, send) -> str:
    """Wait until the run has logged `steps` GRPO steps (it is then held inside the next one),
    check its processes, stop it with `send(pid)`; the run's output, once every process is gone."""
    wait_until(lambda: run.poll() is not None or len(grpo_steps(run_dir)) >= steps, f"GRPO step {steps}", 900)
    assert run.poll() is None, log.read_text()[-3000:]
    processes = run_processes(psutil.Process(run.pid))
    titles = [title(process) for process in processes]
    assert any(name == "VLLM::EngineCore" for name in titles), titles
    assert any("gcs_server" in name for name in titles), titles  # the run's own Ray cluster
    listening = listening_addresses(processes)
    assert listening and listening <= LOOPBACK, listening
    send(run.pid)
    run.wait(300)
    assert still_running(processes) == []  # nothing the run started is left
    return log.read_text()


def assert_stopped(run, output: str, code: int, signal_name: str, step: int, resume: str) -> None:
    """The run exited with the signal's code (128 + signal), saying at which GRPO step it stopped,
    its last checkpoint, and how to resume."""
    assert run.returncode == code, output[-3000:]
    stopped = f"stopped by {signal_name} at GRPO step {step} of {STEPS} (last checkpoint: step-{step:06d})"
    assert stopped in output, output[-3000:]
    assert resume in output


def test_ctrl_c_and_sigterm_stop_everything_and_resume_goes_on(tmp_path, sentinel_cluster):
    run_dir, hold = tmp_path / "run", tmp_path / "hold"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(run_config(run_dir, hold)))
    resume = f"Resume with: cxr-rl train --config {config} --run-dir {run_dir} --address local --resume"

    hold.write_text("2")  # scoring of the second batch waits: the run stays inside GRPO step 2
    first = demo(config, tmp_path / "first.log")
    # Ctrl-C: the terminal signals the whole foreground job.
    output = stop_held_run(
        first, tmp_path / "first.log", run_dir, 1, lambda pid: os.killpg(pid, signal.SIGINT)
    )
    assert_stopped(first, output, 130, "SIGINT", 1, resume)
    sentinel_cluster()  # still answering: only the run's own cluster was stopped

    hold.write_text("3")
    second = demo(config, tmp_path / "second.log", "--resume")
    # SIGTERM, as a supervisor sends it: to the process alone.
    output = stop_held_run(
        second, tmp_path / "second.log", run_dir, 2, lambda pid: os.kill(pid, signal.SIGTERM)
    )
    assert_stopped(second, output, 143, "SIGTERM", 2, resume)
    before = grpo_steps(run_dir)

    hold.unlink()
    third = demo(config, tmp_path / "third.log", "--resume")
    assert third.wait(1500) == 0, (tmp_path / "third.log").read_text()[-3000:]
    steps = grpo_steps(run_dir)
    assert [entry["step"] for entry in steps] == list(range(1, STEPS + 1))  # each step once
    assert [entry["published_version"] for entry in steps] == list(range(1, STEPS + 1))
    assert steps[:2] == before  # steps 1 and 2 were not redone: each run went on from its checkpoint
    assert (run_dir / "grpo" / "checkpoints" / "latest").read_text().strip() == f"step-{STEPS:06d}"
    sentinel_cluster()
