"""Every kind of bad request gets a 4xx naming the field and the reason, and the server keeps
serving."""

import base64

import httpx
import pytest

from tests.integration.conftest import API_TOKEN
from tests.support import b64, noise_xray, png_bytes

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def good_item():
    return {"image": {"b64": b64(png_bytes(noise_xray(0, size=64)))}}


def truncated_jpeg() -> str:
    import io

    buffer = io.BytesIO()
    noise_xray(1).convert("RGB").save(buffer, "JPEG", quality=90)
    return base64.b64encode(buffer.getvalue()[: len(buffer.getvalue()) // 2]).decode()


def huge_png() -> str:
    from PIL import Image

    return b64(png_bytes(Image.new("L", (5000, 5000))))  # small in bytes, 25 M pixels


CASES = {
    "invalid base64": ({"items": [{"image": {"b64": "not base64!!"}}]}, 422, "items[0].image.b64", "base64"),
    "not an image": (
        {"items": [{"image": {"b64": b64(b"hello, I am text" * 20)}}]},
        422,
        "items[0].image",
        "not a JPEG",
    ),
    "truncated jpeg": ({"items": [{"image": {"b64": truncated_jpeg()}}]}, 422, "items[0].image", "truncated"),
    "image bytes over limit": (
        {"items": [{"image": {"b64": b64(b"\0" * 9_500_000)}}]},
        422,
        "items[0].image.b64",
        "size limit",
    ),
    "image pixels over limit": (
        {"items": [{"image": {"b64": huge_png()}}]},
        422,
        "items[0].image",
        "over the limit",
    ),
    "path outside data root": (
        {"items": [{"image": {"path": "../../etc/passwd"}}]},
        422,
        "items[0].image.path",
        "outside",
    ),
    "missing path": (
        {"items": [{"image": {"path": "phantoms/nope.png"}}]},
        422,
        "items[0].image.path",
        "no image",
    ),
    "n below 1": ({"items": [good_item()], "n": 0}, 422, "n", "greater than or equal to 1"),
    "n over limit": ({"items": [good_item()], "n": 9}, 422, "n", "limit"),
    "temperature over vLLM's bound": (
        {"items": [good_item()], "temperature": 3.0},
        422,
        "temperature",
        "less than or equal to 2",
    ),
    "max_tokens over model length": (
        {"items": [good_item()], "max_tokens": 4096},
        422,
        "max_tokens",
        "max_model_len",
    ),
    "unknown prompt format": (
        {"items": [{**good_item(), "prompt_format": "shakespeare"}]},
        422,
        "items[0].prompt_format",
        "unknown prompt format",
    ),
    "unknown adapter": ({"items": [good_item()], "adapter": {"name": "ghost"}}, 404, "adapter.name", "ghost"),
    "too many items": ({"items": [good_item()] * 65}, 422, "items", "limit"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_rollout_request(rollout_server, case):
    body, status, field, reason = CASES[case]
    response = httpx.post(f"{rollout_server.url}/v1/rollouts", json=body, headers=AUTH, timeout=120)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert reason.lower() in error["reason"].lower()


def test_body_over_the_limit_is_refused_before_reading(rollout_server):
    body = b'{"items": [{"image": {"b64": "' + b"A" * 16_500_000 + b'"}}]}'
    response = httpx.post(
        f"{rollout_server.url}/v1/rollouts",
        content=body,
        headers={**AUTH, "content-type": "application/json"},
        timeout=120,
    )
    assert response.status_code == 413
    assert response.json()["error"]["field"] == "body"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}])
def test_token_required_on_mutating_endpoints(rollout_server, headers):
    load = httpx.post(
        f"{rollout_server.url}/v1/adapters", json={"name": "x", "path": "/nowhere"}, headers=headers
    )
    delete = httpx.delete(f"{rollout_server.url}/v1/adapters/x", headers=headers)
    rollouts = httpx.post(f"{rollout_server.url}/v1/rollouts", json={"items": [good_item()]}, headers=headers)
    for response in (load, delete, rollouts):
        assert response.status_code == 401
        assert response.json()["error"]["field"] == "authorization"


def test_server_keeps_serving_after_bad_requests(rollout_server):
    httpx.post(f"{rollout_server.url}/v1/rollouts", json={"items": [{"image": {"b64": "%%%"}}]}, headers=AUTH)
    response = httpx.post(
        f"{rollout_server.url}/v1/rollouts",
        json={"items": [good_item()], "n": 2, "max_tokens": 4},
        headers=AUTH,
        timeout=120,
    )
    assert response.status_code == 200
    assert len(response.json()["results"][0]["completions"]) == 2
