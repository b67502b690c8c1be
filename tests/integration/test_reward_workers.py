"""Reward workers for real: a Ray actor, an HTTP service (uvicorn on 127.0.0.1) and the router
that swaps between them while a client keeps scoring."""

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from rewards.client import HttpBackend, RewardClient
from rewards.protocol import RewardError
from rewards.registry import load_reward
from rewards.router import start_router
from rewards.worker import RewardWorker, start_reward_worker
from shared.http_retry import RetryPolicy
from shared.schemas import RewardItem

pytestmark = pytest.mark.integration

SLOW = "tests.integration.test_reward_workers_plugins:SlowCountingReward"
UNIT_PLUGINS = "tests.unit.rewards.test_rewards_plugins"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def reward_service(
    spec: str, port: int | None = None, config: Path | None = None, crash: bool = False
) -> Iterator[str]:
    """`cxr-rl reward serve` in a subprocess; yields its URL once /health answers, then stops it:
    SIGTERM (uvicorn finishes the requests in flight), or SIGKILL when `crash`."""
    port = port or free_port()
    command = [sys.executable, "-m", "cxr_rl.cli", "reward", "serve", "--name", spec, "--port", str(port)]
    if config is not None:
        command += ["--config", str(config)]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"reward service exited: {process.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("reward service did not start in 60 s")
            time.sleep(0.1)
        yield url
    finally:
        if crash:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def completions() -> list[RewardItem]:
    texts = [
        ("<think>enlarged heart</think><solution>Cardiomegaly, Edema</solution>", ["Cardiomegaly"], 120),
        ("<think>normal</think><solution>No Finding</solution>", ["No Finding"], 400),
        ("<think>x</think><solution>Edema, edema, Banana</solution> trailing", ["Edema"], 300),
        ("no tags at all", ["Pneumonia"], 20),
        ("<think>x</think><solution>PTX, ETT</solution>", ["Pneumothorax", "Support Devices"], 260),
    ]
    return [RewardItem(text=text, labels=labels, n_tokens=n) for text, labels, n in texts]


@pytest.mark.parametrize("spec", ["hard", "nuanced"])
def test_ray_actor_and_http_service_agree(local_ray, tmp_path: Path, spec: str) -> None:
    config = {"window_size": 6} if spec == "nuanced" else None
    config_file = tmp_path / "reward.yaml"
    config_file.write_text(json.dumps(config or {}))
    batches = [completions(), completions()[::-1], completions()]

    def run(client: RewardClient) -> list:
        with client:
            results = [client.score(f"b{i}", batch) for i, batch in enumerate(batches)]
        return [result.model_dump() for result in results]

    in_process = run(RewardClient.in_process(load_reward(spec, config)))
    actor = start_reward_worker(spec, config)
    try:
        on_ray = run(RewardClient.for_actor(actor))
    finally:
        local_ray.kill(actor)
    with reward_service(spec, config=config_file if config else None) as url:
        over_http = run(RewardClient.for_url(url))
        health = httpx.get(url + "/health").json()
    assert on_ray == in_process
    assert over_http == in_process
    assert in_process[0]["reward_name"] == spec and len(in_process[0]["totals"]) == 5
    # Each reward declares its scale; both workers report it with every result (the trainer applies it).
    scale = {"hard": 1.0, "nuanced": 0.01}[spec]
    assert [result["scale"] for result in on_ray + over_http] == [scale] * 6
    assert health["reward_scale"] == scale
    if spec == "nuanced":  # the window was carried across the batches (4 predictions each, 6 slots)
        assert [len(result["state"]["window"]) for result in in_process] == [4, 6, 6]


def test_killed_actor_scores_the_batch_once(local_ray, tmp_path: Path) -> None:
    attempts = tmp_path / "attempts.txt"
    # The first attempt would take 300 s: the kill lands during it however slow the machine.
    actor = start_reward_worker(SLOW, {"sleep_s": 300.0, "attempts_file": str(attempts)}, max_restarts=2)
    client = RewardClient.for_actor(actor, timeout_s=120)
    items = [RewardItem(text="x", labels=["Edema", "Cardiomegaly"], n_tokens=1)]

    def kill_once_scoring() -> None:
        deadline = time.monotonic() + 300  # a hang guard: the worker's first attempt has started
        while not (attempts.exists() and attempts.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        local_ray.kill(actor, no_restart=False)  # dies mid-batch; Ray restarts it

    killer = threading.Thread(target=kill_once_scoring)
    killer.start()
    try:
        result = client.score("batch-1", items)
    finally:
        killer.join()
    pids = attempts.read_text().split()
    assert (
        len(pids) == 2 and pids[0] != pids[1]
    )  # attempted in the first process, retried in the restarted one
    assert result.totals == [2.0]
    assert client.states["slow-counting"] == {"batches": 1}  # scored once
    assert client.batches_scored == 1
    client.score("batch-2", items)
    assert client.states["slow-counting"] == {"batches": 2}
    local_ray.kill(actor)


def test_http_retry_after_the_service_dies_mid_batch(tmp_path: Path) -> None:
    attempts = tmp_path / "attempts.txt"
    config = tmp_path / "slow.yaml"
    config.write_text(json.dumps({"sleep_s": 300.0, "attempts_file": str(attempts)}))  # killed during it
    port = free_port()
    # Backoff from 0.5 s doubling to 30 s over 12 retries waits at least ~105 s for the replacement.
    retry = RetryPolicy(retries=12, backoff_s=0.5, max_backoff_s=30.0)
    client = RewardClient(HttpBackend(f"http://127.0.0.1:{port}", timeout_s=30, retry=retry))
    items = [RewardItem(text="x", labels=["Edema"], n_tokens=1)]
    outcome: dict = {}
    with reward_service(SLOW, port=port, config=config, crash=True):
        client.backend.reward_name()
        scoring = threading.Thread(target=lambda: outcome.update(result=client.score("batch-1", items)))
        scoring.start()
        while not (attempts.exists() and attempts.read_text().strip()):
            time.sleep(0.05)
    # The first service is gone mid-batch; a replacement comes up on the same port and the
    # client's retry (with backoff) is scored there, from the same carried state.
    with reward_service(SLOW, port=port, config=config):
        scoring.join(timeout=240)
    assert outcome["result"].totals == [1.0]
    assert len(attempts.read_text().split()) == 2
    assert client.states["slow-counting"] == {"batches": 1} and client.batches_scored == 1


def test_unreachable_service_is_a_clear_error() -> None:
    client = RewardClient(
        HttpBackend(
            f"http://127.0.0.1:{free_port()}", timeout_s=2, retry=RetryPolicy(retries=2, backoff_s=0.01)
        )
    )
    with pytest.raises(RewardError, match="after 3 attempts"):
        client.score("b", [RewardItem(text="x", labels=[], n_tokens=1)])


@pytest.mark.parametrize(
    ("plugin", "message"), [("RaisingReward", "ZeroDivisionError"), ("NaNReward", "non-finite")]
)
def test_plugin_failures_through_ray_and_http(local_ray, plugin: str, message: str) -> None:
    spec = f"{UNIT_PLUGINS}:{plugin}"
    items = [RewardItem(text="x", labels=["Edema"], n_tokens=1)]
    actor = start_reward_worker(spec)
    try:
        client = RewardClient.for_actor(actor)
        with pytest.raises(RewardError, match=message):
            client.score("b1", items)
        assert client.states == {} and client.batches_scored == 0
    finally:
        local_ray.kill(actor)
    with reward_service(spec) as url:
        client = RewardClient.for_url(url, retry=RetryPolicy(retries=0))
        with pytest.raises(RewardError, match=f"HTTP 422.*{message}"):
            client.score("b1", items)
        assert client.states == {} and client.batches_scored == 0


def test_worker_with_a_plugin_that_does_not_import(local_ray) -> None:
    with pytest.raises(RewardError, match="cannot import reward plugin 'no_such_module:Reward'"):
        start_reward_worker("no_such_module:Reward")


def test_a_reward_that_does_not_load_reaches_the_caller_as_a_typed_error(local_ray) -> None:
    """Not a dead actor's formatted traceback to search for a string: the RewardError itself."""
    actor = local_ray.remote(RewardWorker).remote("no_such_module:Reward")
    try:
        with pytest.raises(local_ray.exceptions.RayTaskError) as caught:
            local_ray.get(actor.describe.remote(), timeout=120)
        assert isinstance(caught.value.cause, RewardError)
        assert "cannot import reward plugin 'no_such_module:Reward'" in str(caught.value.cause)
    finally:
        local_ray.kill(actor)
    with pytest.raises(RewardError, match="cannot import reward plugin 'no_such_module:Reward'"):
        start_router("no_such_module:Reward", namespace="router-that-does-not-load")


def swap_cli(address: str, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "cxr_rl.cli", "reward", "swap", "--address", address, *args]
    return subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180)


def test_swap_while_scoring(local_ray) -> None:
    namespace = local_ray.get_runtime_context().namespace
    address = local_ray.get_runtime_context().gcs_address
    router = start_router("hard", namespace=namespace)
    client = RewardClient.for_router(router)
    items = completions()
    try:
        first = client.score("step-1", items)
        swapped = swap_cli(address, "--name", "nuanced", "--namespace", namespace)
        assert swapped.returncode == 0, swapped.stderr
        assert json.loads(swapped.stdout.splitlines()[-1])["previous"] == "hard"
        second = client.score("step-2", items)
        failed = swap_cli(address, "--name", "no_such_module:Reward", "--namespace", namespace)
        third = client.score("step-3", items)  # a failed swap leaves the current reward in place
        with reward_service("hard") as url:
            assert swap_cli(address, "--name", url, "--namespace", namespace).returncode == 0
            fourth = client.score("step-4", items)
    finally:
        client.close()
        local_ray.kill(router)
    assert (first.reward_name, second.reward_name, third.reward_name, fourth.reward_name) == (
        "hard",
        "nuanced",
        "nuanced",
        "hard",
    )
    assert second.reward_version == load_reward("nuanced").version
    assert (first.scale, second.scale, third.scale, fourth.scale) == (1.0, 0.01, 0.01, 1.0)
    assert failed.returncode == 1 and "cannot import reward plugin 'no_such_module:Reward'" in failed.stderr
    assert failed.stderr.count("\n") == 1
    assert client.states["nuanced"]["window"] and client.batches_scored == 4
    assert fourth.totals == first.totals  # the hard reward over HTTP scores as the Ray worker did


def test_swap_without_a_router(local_ray) -> None:
    address = local_ray.get_runtime_context().gcs_address
    result = swap_cli(address, "--name", "nuanced", "--namespace", "no-training-here")
    assert result.returncode == 1
    assert "no reward router named 'reward-router' in namespace 'no-training-here'" in result.stderr
