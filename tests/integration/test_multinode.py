"""The driver on a multi-node Ray cluster: Ray's own test cluster (`ray.cluster_utils.Cluster`, one
raylet per node on this machine) with a head node that has no accelerator and two worker nodes
that each declare one `accel` (a custom resource standing in for a GPU). The trainer and the
rollout replica each ask for one, so they must land on different worker nodes, off the driver's
node; the run (tiny model, one SFT step, one GRPO step) must complete. A run asking for what no
node has must fail after `placement_timeout_s`, in one line naming the actor and the nodes.

The cluster runs in a process of its own with a private RAY_TMPDIR (so no other Ray cluster's
address file on the machine is touched); every process it started, and every process those
started, is stopped at the end."""

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
PROJECT = Path(__file__).resolve().parents[2]

CLUSTER = """
import json, sys
from ray.cluster_utils import Cluster

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
workers = [cluster.add_node(num_cpus=1, resources={"accel": 1}) for _ in range(2)]
cluster.wait_for_nodes()
print(json.dumps({"address": cluster.address, "head": cluster.head_node.node_id,
                  "workers": [node.node_id for node in workers]}), flush=True)
sys.stdin.read()  # until the test closes our stdin
cluster.shutdown()
"""

CONFIG = {
    "name": "multinode",
    "model": "embedded:tiny-medgemma",
    "data": {"phantoms": {"n": 24, "seed": 3}, "sft_format": "only_label"},
    "sft": {
        "training": {"learning_rate": 5e-3, "epochs": 1, "max_steps": 1, "gradient_accumulation_steps": 1},
        "gradient_checkpointing": False,
    },
    "grpo": {
        "prompt_format": "only_label",
        "batch_size": 1,
        "max_steps": 1,
        "sampling": {"group_size": 2, "max_tokens": 8},
        "gradient_checkpointing": False,
    },
    "reward": {"spec": "hard", "config": {"min_tokens": 4}},
    "rollout": {
        "engine": {"max_model_len": 2048},
        "placement": {"num_cpus": 0.5, "resources": {"accel": 1}},
    },
    "trainer": {"num_cpus": 0.5, "resources": {"accel": 1}},
    "evaluation": {"every": 0, "max_images": 2, "max_tokens": 8},
    "placement_timeout_s": 300,
}


class RayTestCluster:
    """The cluster process, its address and node ids; `stop` ends it and everything it started."""

    def __init__(self):
        self.temp_dir = tempfile.mkdtemp(prefix="r")  # unix socket paths under it must stay short
        token = Path(self.temp_dir) / "auth_token"
        token.write_text(secrets.token_hex(32))
        # Token auth on, as `ray start` turns it on wherever a token exists (a private token file, so
        # the machine's own ~/.ray is left alone); the driver must find its way in as users' does.
        self.env = {**os.environ, "RAY_TMPDIR": self.temp_dir, "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_AUTH_TOKEN_PATH": str(token)}  # fmt: skip
        self.env.pop("RAY_AUTH_MODE", None)
        cluster_env = {**self.env, "RAY_AUTH_MODE": "token"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", CLUSTER], cwd=PROJECT, env=cluster_env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        line = self.process.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("the Ray test cluster did not start")
        info = json.loads(line)
        self.address, self.head, self.workers = info["address"], info["head"], info["workers"]

    def run_driver(self, config: dict, run_dir: Path) -> subprocess.CompletedProcess:
        path = run_dir.parent / f"{run_dir.name}.yaml"
        path.write_text(yaml.safe_dump({**config, "run_dir": str(run_dir)}))
        return subprocess.run(
            [sys.executable, "-m", "cxr_rl.cli", "train", "--config", str(path), "--address", self.address],
            cwd=PROJECT, env=self.env, capture_output=True, text=True, timeout=1500,
        )  # fmt: skip

    def stop(self) -> None:
        import psutil

        ours = self._started_processes()
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            self.process.stdin.close()  # the cluster process shuts its nodes down
            self.process.wait(120)
        if self.process.poll() is None:
            self.process.kill()
        for process in ours:  # anything the nodes started that outlived them (engine processes)
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(ours, timeout=30)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _started_processes(self) -> list:
        """The cluster process's descendants and every process running out of our temp dir, with
        their descendants (Ray's daemons detach from the process that started them)."""
        import psutil

        roots = [psutil.Process(self.process.pid)]
        for process in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if any(self.temp_dir in part for part in process.info["cmdline"] or ()):
                    roots.append(process)
        found = {}
        for root in roots:
            with contextlib.suppress(psutil.Error):
                for process in [root, *root.children(recursive=True)]:
                    found[process.pid] = process
        found.pop(os.getpid(), None)
        return list(found.values())


@pytest.fixture(scope="module")
def cluster():
    started = RayTestCluster()
    try:
        yield started
    finally:
        started.stop()


def test_trainer_and_replica_run_on_other_nodes_than_the_driver(cluster, tmp_path):
    run_dir = tmp_path / "multinode"
    result = cluster.run_driver(CONFIG, run_dir)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    nodes = json.loads((run_dir / "placement.json").read_text())
    assert nodes["driver"] == cluster.head  # the head node has no `accel`: nothing of the run's fits there
    assert {nodes["trainer"], nodes["rollout-0"]} == set(cluster.workers)  # one on each worker node
    steps = [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()
    ]
    assert [entry["step"] for entry in steps if entry["phase"] == "grpo"] == [1]
    assert (run_dir / "sft" / "adapter" / "adapter_model.safetensors").is_file()
    assert (run_dir / "summary.md").is_file()


@pytest.mark.parametrize(
    "section, what",
    [("trainer", "the trainer"), ("rollout", "rollout replica 0")],
)
def test_an_actor_no_node_can_take_fails_after_the_timeout(cluster, tmp_path, section, what):
    config = json.loads(json.dumps(CONFIG))
    placement = config["trainer"] if section == "trainer" else config["rollout"]["placement"]
    placement["resources"] = {"accel": 2}  # each worker node has one
    config["placement_timeout_s"] = 5
    result = cluster.run_driver(config, tmp_path / f"unplaceable-{section}")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("cxr-rl train: error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert (
        f"{what} was not placed within 5 s (placement_timeout_s): it asks for CPU 0.5, accel 2" in errors[0]
    )
    assert errors[0].count("accel 0/1") + errors[0].count("accel 1/1") == 2  # both worker nodes described
