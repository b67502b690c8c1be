"""Adapters on a real server: loaded by path only from under the configured adapter root, uploaded as
raw safetensors at real sizes, and idempotent when a client retries."""

import io
import json
import re
import socketserver
import threading
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import load, save

from rollout_server.client import RolloutClient, RolloutServerError
from shared.schemas import AdapterSelector, AdapterUpdate, ImageRef, RolloutItem, RolloutRequest
from tests.integration.conftest import API_TOKEN
from tests.support import b64, noise_xray, png_bytes, random_adapter
from trainer.sync import HttpAdapterPublisher

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
BALLAST = "base_model.model.model.language_model.embed_tokens.base_layer.weight"


@pytest.fixture(scope="module")
def tiny_update(tiny_medgemma) -> AdapterUpdate:
    from trainer.lora import adapter_update

    return adapter_update(random_adapter(tiny_medgemma, seed=31), "policy", "tiny", version=None)


def write_adapter(update: AdapterUpdate, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_model.safetensors").write_bytes(update.safetensors)
    (folder / "adapter_config.json").write_text(json.dumps(update.adapter_config))
    return folder


def swaps_done(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return float(re.search(r"^cxr_rl_adapter_swap_seconds_count (\S+)$", text, re.MULTILINE).group(1))


def served_versions(client: RolloutClient, name: str) -> list[int]:
    return [info.version for info in client.adapters() if info.name == name]


def test_load_by_path_only_from_under_the_adapter_root(client, rollout_server, tiny_update, tmp_path):
    root = rollout_server.adapter_root
    write_adapter(tiny_update, root / "rooted")
    assert client.load_adapter_path("rooted", "rooted").version == 0  # relative to the root
    assert client.load_adapter_path("rooted", root / "rooted", version=1).version == 1  # absolute, inside
    outside = write_adapter(tiny_update, tmp_path / "outside")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    for path in ("../outside", str(outside), "escape", "rooted/../../outside", "/etc"):
        with pytest.raises(RolloutServerError) as refused:
            client.load_adapter_path("rooted", path)
        assert (refused.value.status, refused.value.field) == (403, "path"), path
        assert "adapter root" in refused.value.reason
    with pytest.raises(RolloutServerError) as unusable:
        client.load_adapter_path("rooted", "x" * 1000)
    assert (unusable.value.status, unusable.value.field) == (422, "path")
    assert served_versions(client, "rooted") == [1]
    client.unload_adapter("rooted")


def test_a_120_mb_adapter_upload_goes_live(client, tiny_update):
    """Through the trainer's HTTP publisher. The tiny model's adapter is kilobytes; 120 MB of ballast
    ride along as a base-embedding tensor (what PEFT writes with `save_embedding_layers`, and vLLM
    skips), so the upload is the size of a real MedGemma-4B rank-16 adapter (119 MB) and still goes
    live and serves."""
    tensors = load(tiny_update.safetensors)
    tensors[BALLAST] = torch.zeros(30_000, 1_000)
    big = tiny_update.model_copy(update={"name": "big", "safetensors": save(tensors)})
    published = HttpAdapterPublisher([client]).publish(big)  # the trainer's HTTP path
    assert published.bytes >= 120_000_000 and published.replicas == 1
    (info,) = [info for info in client.adapters() if info.name == "big"]
    assert info.version == published.version and info.canary_delta > 1e-3  # live: the canary moved
    image = b64(png_bytes(noise_xray(12)))
    response = client.rollouts(
        RolloutRequest(
            items=[RolloutItem(image=ImageRef(b64=image))],
            n=2,
            max_tokens=4,
            adapter=AdapterSelector(name="big"),
        )
    )
    assert {c.adapter_version for c in response.results[0].completions} == {info.version}
    client.unload_adapter("big")


def test_a_real_medgemma_4b_adapter_fits_the_upload_limit(client):
    """A rank-16 MedGemma-4B LoRA (119 MB, its real tensor names and shapes) passes the upload limit
    whole; this tiny server runs another model, so vLLM refuses it: a 422, and the server serves on."""
    from benchmarks._medgemma_4b import medgemma_4b_shape, synthetic_lora_state

    shape = medgemma_4b_shape(rank=16)
    weights = save(synthetic_lora_state(shape, seed=0))
    assert len(weights) > 110_000_000
    update = AdapterUpdate(name="medgemma-4b", safetensors=weights, adapter_config=shape.adapter_config)
    with pytest.raises(RolloutServerError) as refused:
        client.load_adapter(update)
    assert (refused.value.status, refused.value.field) == (422, "adapter")
    assert "this server's model" in refused.value.reason
    assert served_versions(client, "medgemma-4b") == []
    image = b64(png_bytes(noise_xray(13)))
    assert client.rollouts(RolloutRequest(items=[RolloutItem(image=ImageRef(b64=image))], n=1, max_tokens=2))


def upload(url: str, name: str, update: AdapterUpdate, key: str | None = None, version: int | None = None):
    files = {
        "weights": ("adapter_model.safetensors", io.BytesIO(update.safetensors), "application/octet-stream"),
        "config": ("adapter_config.json", json.dumps(update.adapter_config).encode(), "application/json"),
    }
    data = {} if version is None else {"version": str(version)}
    headers = {**AUTH, **({"Idempotency-Key": key} if key else {})}
    return httpx.post(
        f"{url}/v1/adapters/{name}/versions", files=files, data=data, headers=headers, timeout=300
    )


def test_adapter_uploads_are_idempotent(client, rollout_server, tiny_update, tiny_medgemma):
    from trainer.lora import adapter_update

    url = rollout_server.url
    before = swaps_done(url)
    first = upload(url, "retry", tiny_update, key="step-7")
    again = upload(url, "retry", tiny_update, key="step-7")
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert first.json()["version"] == again.json()["version"] == 0
    assert served_versions(client, "retry") == [0] and swaps_done(url) == before + 1
    other = adapter_update(random_adapter(tiny_medgemma, seed=32), "policy", "retry", version=None)
    reused = upload(url, "retry", other, key="step-7")  # the same key for other weights is a mistake
    assert reused.status_code == 409 and reused.json()["error"]["field"] == "Idempotency-Key"

    pinned = upload(url, "retry", other, version=5)
    repeat = upload(url, "retry", other, version=5)  # a client-chosen version, sent twice
    assert pinned.json()["version"] == repeat.json()["version"] == 5
    assert served_versions(client, "retry") == [5] and swaps_done(url) == before + 2
    clash = upload(url, "retry", tiny_update, version=5)
    assert clash.status_code == 409 and clash.json()["error"]["field"] == "version"
    client.unload_adapter("retry")


class DroppingProxy(socketserver.ThreadingTCPServer):
    """Relays HTTP requests to the server; for the first adapter upload it relays the request, lets
    the server finish, and then hangs up on the client without the answer (a timeout or a reset, as
    the client sees it). Every relayed answer closes its connection."""

    daemon_threads = True

    def __init__(self, upstream: str):
        super().__init__(("127.0.0.1", 0), _Relay)
        self.upstream, self.uploads, self.dropped = upstream, 0, False
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _Relay(socketserver.StreamRequestHandler):
    def handle(self):
        proxy: DroppingProxy = self.server
        method, path, _ = self.rfile.readline().decode().split(" ", 2)
        headers = {}
        while (line := self.rfile.readline().decode()) not in ("\r\n", ""):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        body = self.rfile.read(int(headers.get("content-length", 0)))
        forwarded = {k: v for k, v in headers.items() if k not in ("host", "content-length", "connection")}
        response = httpx.request(method, proxy.upstream + path, headers=forwarded, content=body, timeout=300)
        if path.endswith("/versions"):
            proxy.uploads += 1
            if not proxy.dropped:
                proxy.dropped = True
                return  # the server did the work; the client never hears of it
        self.wfile.write(f"HTTP/1.1 {response.status_code} X\r\n".encode())
        self.wfile.write(f"content-type: {response.headers.get('content-type', 'text/plain')}\r\n".encode())
        self.wfile.write(f"content-length: {len(response.content)}\r\nconnection: close\r\n\r\n".encode())
        self.wfile.write(response.content)


def test_a_client_retry_after_a_lost_answer_creates_no_second_version(rollout_server, tiny_update):
    proxy = DroppingProxy(rollout_server.url)
    try:
        before = swaps_done(rollout_server.url)
        with RolloutClient(proxy.url, token=API_TOKEN, timeout_s=300) as client:
            info = client.load_adapter(tiny_update.model_copy(update={"name": "lost", "version": None}))
            assert proxy.uploads == 2 and proxy.dropped  # the first answer was lost, the client retried
            assert info.version == 0 and served_versions(client, "lost") == [0]
            assert swaps_done(rollout_server.url) == before + 1  # loaded once
            client.unload_adapter("lost")
    finally:
        proxy.shutdown()
        proxy.server_close()
