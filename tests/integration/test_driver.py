"""The main job as users run it: `ray start --head`, then the driver on the embedded default (tiny
MedGemma-architecture model, phantom X-rays, CPU) with small step counts. During the run the test
kills the reward worker and the rollout replica's vLLM engine process (not its actor), then the
replica's actor; the run must still finish with every step scored once, and say in its log what was
restarted. Each kill lands while the run is held inside a step (tests/integration/held_reward.py).

The run uses a prompt format of the user's own (labels only, no rationale) from a formats file: SFT,
the rollout server, the GRPO trainer (whose prompt tokens must match the server's) and evaluation
all read it. Selection sets and report sets stay apart: every evaluation scores the same subsets,
and the final report scores the phantom report sets only (one ID, two OOD)."""

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tests.processes import engine_processes, title, wait_until
from tests.support import free_port

pytestmark = pytest.mark.integration
PROJECT = Path(__file__).resolve().parents[2]
STEPS = 5
HELD_REWARD = "tests.integration.held_reward:HeldReward"  # the hard reward, held at a step on request

CONFIG = {
    "name": "e2e",
    "model": "embedded:tiny-medgemma",
    "data": {"phantoms": {"n": 48, "seed": 1}, "sft_format": "labels_first"},
    "sft": {
        "training": {"learning_rate": 5e-3, "epochs": 1, "max_steps": 4, "gradient_accumulation_steps": 2},
        "gradient_checkpointing": False,
    },
    "grpo": {
        "prompt_format": "labels_first",
        "batch_size": 2,
        "max_steps": STEPS,
        "sampling": {"group_size": 4, "max_tokens": 32},
        "optim": {"lr": 1e-3},
        "gradient_checkpointing": False,
    },
    "reward": {"spec": "hard", "config": {"min_tokens": 8}},
    "rollout": {"engine": {"max_model_len": 2048}, "placement": {"num_cpus": 0.5}},
    "evaluation": {"every": 2, "max_images": 4, "max_tokens": 32},
}


USER_FORMATS = (
    "labels_first:\n  instruction: Name the findings as labels, nothing else.\n  rationale: false\n"
)


class RayHead:
    """`ray start --head` in a private temp dir, stopped by killing only its own processes (`ray
    stop` would also stop any other Ray cluster on the machine, the tests' own included)."""

    def __init__(self):
        self.temp_dir = tempfile.mkdtemp(prefix="r", dir="/tmp")  # unix socket paths must stay short
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        token = Path(self.temp_dir) / "auth_token"
        token.write_text(secrets.token_hex(32))
        self.env = ray_env(str(token))
        env = self.env
        subprocess.run(
            [str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={self.port}", "--num-cpus=2",
             "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={self.temp_dir}"],
            check=True, capture_output=True, env=env, timeout=180,
        )  # fmt: skip

    def stop(self) -> None:
        for signal_number in (signal.SIGTERM, signal.SIGKILL):
            for pid in self._pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal_number)
            time.sleep(2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def raylet_pid(self) -> int:
        """The head node's raylet: every worker process (actors, their vLLM engines) is below it."""
        (pid,) = [
            pid for pid in self._pids() if b"raylet/raylet" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        return pid

    def _pids(self) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if self.temp_dir.encode() in (entry / "cmdline").read_bytes():
                        pids.append(int(entry.name))
                except OSError:
                    continue
        return pids


def ray_env(token_path: str) -> dict[str, str]:
    """The users' case: `ray start` finds a token on the machine and turns token auth on; the
    driver, given the address explicitly, must still get in. (A private token file, so the
    machine's own `~/.ray` is left alone.)"""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_TOKEN_PATH": token_path}
    env.pop("RAY_AUTH_MODE", None)
    return env


def ray_call(head: RayHead, code: str) -> str:
    """Run a few lines against the cluster from another process (this one may hold its own Ray)."""
    script = (
        f"import ray\nray.init(address={head.address!r}, namespace='cxr-rl', log_to_driver=False)\n{code}"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
        env={**head.env, "RAY_AUTH_MODE": "token"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def grpo_steps(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if line["phase"] == "grpo"]


def replica_engine(head: RayHead, run_dir: Path) -> int:
    """The pid of the replica's vLLM engine core below the head's raylet, once there is one (a
    replica Ray is restarting has none for a while). Waits less than the trainer's 300 s reward
    timeout, which a held step's scoring runs against; says what it saw if there is none."""
    try:
        wait_until(
            lambda: bool(engine_processes(head.raylet_pid())), "the replica's vLLM engine process", 180
        )
    except TimeoutError as error:
        below = [title(process) for process in psutil.Process(head.raylet_pid()).children(recursive=True)]
        log = (run_dir / "driver.log").read_text() if (run_dir / "driver.log").is_file() else ""
        raise TimeoutError(f"{error}; below the raylet: {below}; the run's log ends: {log[-1500:]}") from None
    return engine_processes(head.raylet_pid())[0].pid


@pytest.fixture(scope="module")
def driver_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "e2e"
    config_path = run_dir.parent / "e2e.yaml"
    formats = run_dir.parent / "formats.yaml"
    formats.write_text(USER_FORMATS)
    data = {**CONFIG["data"], "prompt_formats_file": str(formats)}
    hold = run_dir.parent / "hold"
    hold.write_text("2")  # the run waits in GRPO step 2's scoring until the test lets it go on
    reward = {"spec": HELD_REWARD, "config": {**CONFIG["reward"]["config"], "hold_file": str(hold)}}
    config_path.write_text(
        yaml.safe_dump({**CONFIG, "data": data, "run_dir": str(run_dir), "reward": reward})
    )
    head = RayHead()
    log = (run_dir.parent / "driver.out").open("w")
    driver = None
    try:
        driver = subprocess.Popen(
            [sys.executable, "-m", "cxr_rl.cli", "train", "--config", str(config_path), "--address", head.address],
            cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT, env=head.env,
        )  # fmt: skip
        kills, engines = [], []

        def steps_done(count: int) -> bool:
            return driver.poll() is not None or len(grpo_steps(run_dir)) >= count

        # Each fault lands while the run waits inside a step's scoring (HeldReward), however slow
        # the machine: the reward worker and the replica's engine process in step 2, the replica
        # (its actor) in step 4.
        wait_until(lambda: steps_done(1), "GRPO step 1", 1200)
        if driver.poll() is None:
            engines.append(replica_engine(head, run_dir))  # found first: the reward is held meanwhile
            ray_call(head, "target = ray.get(ray.get_actor('reward-router').current.remote())\n"
                     "ray.kill(target.actor, no_restart=False)")  # fmt: skip
            kills.append("reward worker")
            os.kill(engines[0], signal.SIGKILL)  # the engine core, not the actor around it
            kills.append("engine process")
            hold.write_text("4")
        wait_until(lambda: steps_done(3), "GRPO step 3", 1200)
        if driver.poll() is None:
            engines.append(replica_engine(head, run_dir))  # the restarted replica's
            ray_call(head, "ray.kill(ray.get_actor('e2e-rollout-0'), no_restart=False)")
            kills.append("rollout replica")
            hold.unlink()
        wait_until(lambda: driver.poll() is not None, "the run to finish", 1200)
        yield run_dir, driver.returncode, kills, (run_dir.parent / "driver.out").read_text(), engines
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
            driver.wait(60)
        log.close()
        head.stop()


def test_run_folder_holds_the_whole_run(driver_run):
    run_dir, returncode, _, output, _ = driver_run
    assert returncode == 0, output[-3000:]
    steps = grpo_steps(run_dir)
    assert [entry["step"] for entry in steps] == list(range(1, STEPS + 1))  # every step, once
    assert [entry["policy_version"] for entry in steps] == list(range(STEPS))
    assert [entry["published_version"] for entry in steps] == list(range(1, STEPS + 1))
    for name in ("reward.png", "reward_components.png", "completion_length.png", "validation_macro_f1.png"):
        assert (run_dir / "plots" / name).stat().st_size > 5_000
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    report = json.loads((run_dir / "evaluation" / "final" / "report.json").read_text())
    assert report and (run_dir / "evaluation" / "final" / "report.md").is_file()
    predictions = (run_dir / "evaluation" / "final" / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) >= 8  # 4 validation + 4 OOD images per checkpoint at least
    points = [json.loads(line) for line in (run_dir / "evaluation" / "points.jsonl").read_text().splitlines()]
    assert [point["step"] for point in points] == [0, 2, 4, 5]
    for key in ("id_subset", "ood_subset"):  # the same images at every evaluation
        assert len({point[key] for point in points}) == 1, key
    assert all(point["id_ci"][0] <= point["id_macro_f1"] <= point["id_ci"][1] for point in points)
    assert report["config"]["datasets"] == {"mimic": "chexpert14", "chexpert": "chexpert14", "nih": "nih9"}
    assert (report["config"]["in_distribution"], report["config"]["out_of_distribution"]) == (
        ["mimic"],
        ["chexpert", "nih"],
    )
    assert {json.loads(line)["dataset"] for line in predictions} == {"mimic", "chexpert", "nih"}
    summary_json = json.loads((run_dir / "summary.json").read_text())
    for key in ("skill_over_baseline", "skill_over_baseline_ci", "distinct_answer_sets", "wall_s"):
        assert key in summary_json
    assert [point["step"] for point in summary_json["validation"]] == [0, 2, 4, 5]
    for point in summary_json["validation"]:  # ID and OOD with their intervals at every step
        assert {"step", "id_macro_f1", "id_ci", "ood_macro_f1", "ood_ci"} <= set(point)
        assert point["id_ci"][0] <= point["id_macro_f1"] <= point["id_ci"][1]
        assert point["ood_ci"][0] <= point["ood_macro_f1"] <= point["ood_ci"][1]
    assert json.loads((run_dir / "run_config.json").read_text())["grpo"]["prompt_format"] == "labels_first"
    summary = (run_dir / "summary.md").read_text()
    for heading in (
        "## Final GRPO step",
        "## Validation during GRPO",
        "## Checkpoint selection",
        "## Timings",
    ):
        assert heading in summary
    assert (run_dir / "sft" / "adapter" / "adapter_model.safetensors").is_file()
    assert (run_dir / "grpo" / "checkpoints" / "latest").read_text().strip() == f"step-{STEPS:06d}"


def test_killed_reward_worker_engine_and_replica_are_restarted_and_logged(driver_run):
    run_dir, returncode, kills, output, engines = driver_run
    assert returncode == 0, output[-3000:]
    assert kills == ["reward worker", "engine process", "rollout replica"]
    assert len(set(engines)) == 2  # the replica whose engine died came back with an engine of its own
    log = (run_dir / "driver.log").read_text()
    assert "reward worker changed" in log and "pid" in log
    assert "rollout replica 0 restarted" in log
    assert len({entry["step"] for entry in grpo_steps(run_dir)}) == STEPS
