"""Closed by default, on the HTTP layer alone (the app on 127.0.0.1 without an engine): a server
started without a key refuses every adapter change; with a key, changes need it; reading endpoints
follow vLLM's --api-key rule. Upload bodies have their own limit, chunked or not."""

import contextlib
import threading
import time

import httpx
import pytest
import uvicorn

from rollout_server.app import create_app
from rollout_server.config import EngineConfig, LimitsConfig, ServerConfig
from rollout_server.service import RolloutService
from tests.support import free_port

pytestmark = pytest.mark.integration
KEY = "a-run-token"


@contextlib.contextmanager
def bare_server(tmp_path, **options):
    """The server's app on a free port, engine never started (every engine call answers 503)."""
    config = ServerConfig(
        engine=EngineConfig(model=str(tmp_path / "no-model")),
        adapter_dir=tmp_path / "adapters",
        port=free_port(),
        **options,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(RolloutService(config), start_engine=False), port=config.port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(30)


def adapter_changes(url: str, headers: dict) -> list[httpx.Response]:
    files = {"weights": ("adapter_model.safetensors", b"\0" * 64), "config": ("adapter_config.json", b"{}")}
    return [
        httpx.post(f"{url}/v1/adapters", json={"name": "a", "path": "a"}, headers=headers),
        httpx.post(f"{url}/v1/adapters/a/versions", files=files, headers=headers),
        httpx.delete(f"{url}/v1/adapters/a", headers=headers),
    ]


def test_a_server_without_a_key_refuses_every_adapter_change(tmp_path):
    with bare_server(tmp_path) as url:
        for response in adapter_changes(url, {"Authorization": "Bearer anything"}):
            assert response.status_code == 403, response.text
            error = response.json()["error"]
            assert error["field"] == "authorization" and "--api-key" in error["reason"]
        # Reading endpoints are open without a key, as in vLLM (here: not ready, no engine).
        assert httpx.get(f"{url}/v1/models").status_code == 503


def test_with_a_key_adapter_changes_and_reads_need_it(tmp_path):
    with bare_server(tmp_path, api_token=KEY) as url:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            for response in [*adapter_changes(url, headers), httpx.get(f"{url}/v1/models", headers=headers)]:
                assert response.status_code == 401, response.text
        for response in adapter_changes(url, {"Authorization": f"Bearer {KEY}"}):
            assert response.status_code == 503  # past the key check; no engine here


def test_upload_bodies_have_their_own_limit(tmp_path):
    limits = LimitsConfig(max_body_bytes=64 * 1024, max_adapter_bytes=1024 * 1024)
    auth = {"Authorization": f"Bearer {KEY}"}
    with bare_server(tmp_path, api_token=KEY, limits=limits) as url:
        within = {"weights": ("adapter_model.safetensors", b"\0" * 512 * 1024), "config": ("c.json", b"{}")}
        response = httpx.post(f"{url}/v1/adapters/a/versions", files=within, headers=auth)
        assert response.status_code == 503  # over the JSON limit, under the upload limit: read, not refused

        over = {"weights": ("adapter_model.safetensors", b"\0" * 1_100_000), "config": ("c.json", b"{}")}
        response = httpx.post(f"{url}/v1/adapters/a/versions", files=over, headers=auth)
        assert response.status_code == 413 and response.json()["error"]["field"] == "body"

        def chunks():  # a well-formed multipart upload whose weights run past the limit
            yield b'--x\r\nContent-Disposition: form-data; name="weights"; filename="w"\r\n\r\n'
            for _ in range(12):
                yield b"\0" * 100_000
            yield b"\r\n--x--\r\n"

        response = httpx.post(
            f"{url}/v1/adapters/a/versions",
            content=chunks(),
            headers={**auth, "content-type": "multipart/form-data; boundary=x"},
        )
        assert response.status_code == 413 and response.json()["error"]["field"] == "body"
