"""The trainer knows the rollout replicas through shared.replicas, never the rollout server's
modules: importing the trainer's actor and its GRPO loop loads no web server and no vLLM. And the
dispatcher follows a replica Ray restarted to its new address."""

import json
import subprocess
import sys
from pathlib import Path

from trainer.rollouts import RolloutDispatcher

PROJECT = Path(__file__).resolve().parents[3]
SERVER_SIDE = ("fastapi", "uvicorn", "starlette", "vllm", "rollout_server.app", "rollout_server.actor")


def test_importing_the_trainer_loads_nothing_of_the_rollout_server():
    probe = (
        "import json, sys; import trainer.actor, trainer.grpo.trainer; "
        f"print(json.dumps(sorted(name for name in {SERVER_SIDE!r} if name in sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT, capture_output=True, text=True, timeout=300, check=True
    )
    assert json.loads(result.stdout.splitlines()[-1]) == []


def test_the_dispatcher_follows_replicas_to_their_new_addresses():
    dispatcher = RolloutDispatcher(["http://127.0.0.1:8001", "http://127.0.0.1:8002/"], token="key")
    try:
        first = dispatcher.clients[0]
        assert dispatcher.reconnect(["http://127.0.0.1:8001", "http://127.0.0.1:9002"]) == [1]
        assert dispatcher.urls() == ["http://127.0.0.1:8001", "http://127.0.0.1:9002"]
        assert (
            dispatcher.clients[0] is first and dispatcher.clients[1].headers["Authorization"] == "Bearer key"
        )
        assert dispatcher.reconnect(dispatcher.urls()) == []
    finally:
        dispatcher.close()
