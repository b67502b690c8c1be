"""When vLLM's engine core dies under a running server, and when one item of a batch fails while
the others generate. (The Ray replica's restart after an engine death is proven end to end in
test_driver.py: the run kills a replica's engine process mid-run and goes on.)"""

import threading

import httpx
import pytest

from rollout_server.client import RolloutClient, RolloutServerError
from shared.schemas import AdapterSelector, ChatMessage, ImageRef, RolloutItem, RolloutRequest
from tests.integration.conftest import API_TOKEN
from tests.processes import engine_processes, metric, title, wait_until
from tests.support import ServerProcess, b64, noise_xray, png_bytes, random_adapter

pytestmark = pytest.mark.integration


def long_request(**fields) -> RolloutRequest:
    """One X-ray, n=2, exactly 1,500 tokens each: still generating long after any check below."""
    item = RolloutItem(image=ImageRef(b64=b64(png_bytes(noise_xray(3)))))
    return RolloutRequest(items=[item], n=2, max_tokens=1500, min_tokens=1500, seed=0, **fields)


def test_dead_engine_answers_503_everywhere(tmp_path, tiny_medgemma, monkeypatch):
    """Kill the engine core process (not the server): the request in flight gets a 503 naming the
    engine, /ready and /health turn 503, later requests get 503, and no engine process is left.
    (vLLM's VLLM_KEEP_ALIVE_ON_ENGINE_DEATH keeps the server up to be looked at; without it the
    server exits with status 1, and a Ray replica restarts.)"""
    monkeypatch.setenv("VLLM_KEEP_ALIVE_ON_ENGINE_DEATH", "1")
    config = {"engine": {"model": str(tiny_medgemma), "max_model_len": 2048, "max_loras": 2}}
    with ServerProcess(config, tmp_path, token=API_TOKEN) as server:
        server.wait_ready()
        engines = engine_processes(server.process.pid)
        assert [title(process) for process in engines][:1] == ["VLLM::EngineCore"]
        with RolloutClient(server.url, token=API_TOKEN, timeout_s=300) as client:
            outcome: dict = {}

            def in_flight() -> None:
                # One request after another until one is answered with an error: on a loaded
                # machine a request can end between two polls of the gauge below, and the next
                # one is then in flight for the kill.
                while "error" not in outcome:
                    try:
                        client.rollouts(long_request())
                    except RolloutServerError as error:
                        outcome["error"] = error

            sender = threading.Thread(target=in_flight)
            sender.start()
            wait_until(lambda: metric(server.url, "cxr_rl_engine_requests") >= 1, "the request to reach vLLM")
            engines[0].kill()  # SIGKILL the engine core, as the OOM killer would
            sender.join(300)
            assert not sender.is_alive()
            assert outcome["error"].status == 503 and "engine died" in outcome["error"].reason

            ready = httpx.get(f"{server.url}/ready")
            assert ready.status_code == 503 and "engine died" in ready.json()["error"]
            assert httpx.get(f"{server.url}/health").status_code == 503
            with pytest.raises(RolloutServerError) as later:
                client.rollouts(long_request())
            assert later.value.status == 503 and "engine died" in later.value.reason
        wait_until(
            lambda: not any(process.is_running() for process in engines), "the engine processes to end"
        )
        assert server.process.poll() is None  # kept alive as asked


def test_a_failed_item_cancels_the_rest_of_its_batch(rollout_server, tiny_medgemma):
    """Item 1's prompt is longer than the model's context (vLLM refuses it when it is submitted)
    while item 0 generates 1,500 tokens on adapter version 0. The 422 comes back only once item 0
    is cancelled inside vLLM, so nothing still runs on version 0 when the request lets go of it
    and a new version unloads it."""
    from trainer.lora import adapter_update

    model = random_adapter(tiny_medgemma, seed=3)
    with RolloutClient(rollout_server.url, token=API_TOKEN, timeout_s=300) as client:
        client.load_adapter(adapter_update(model, "policy", "batch", version=0))
        too_long = ChatMessage(
            role="user", content=[{"type": "image"}, {"type": "text", "text": "lung " * 3000}]
        )
        request = long_request(adapter=AdapterSelector(name="batch", version=0))
        request.items.append(RolloutItem(image=request.items[0].image, messages=[too_long]))
        with pytest.raises(RolloutServerError) as refused:
            client.rollouts(request)
        assert (refused.value.status, refused.value.field) == (422, "items[1]")
        assert metric(rollout_server.url, "cxr_rl_engine_requests") == 0  # item 0 was aborted
        assert [(a.version, a.in_flight) for a in client.adapters() if a.name == "batch"] == [(0, 0)]
        client.load_adapter(adapter_update(model, "policy", "batch", version=1))  # unloads version 0
        short = long_request(adapter=AdapterSelector(name="batch")).model_copy(
            update={"max_tokens": 4, "min_tokens": 4}
        )
        assert [c.adapter_version for c in client.rollouts(short).results[0].completions] == [1, 1]
        client.unload_adapter("batch")
