"""Every kind of bad request gets a 4xx naming the field and the reason, on /v1/rollouts and on
/v1/chat/completions alike, and the server keeps serving. Images are refused from their header, before
a pixel is decoded."""

import base64

import httpx
import pytest

from tests.integration.conftest import API_TOKEN, MAX_REQUEST_PIXELS
from tests.malformed import jpeg_claiming, multiframe_dicom, png_claiming, png_of
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
    "path name too long": (
        {"items": [{"image": {"path": "x" * 1000}}]},
        422,
        "items[0].image.path",
        "cannot read",
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
    # Refused from the header, before decoding (PIL alone raises DecompressionBombError here: a 500).
    "png bomb": ({"items": [{"image": {"b64": b64(png_claiming(20000, 20000))}}]}, 422, "items[0].image",
                 "20000x20000"),
    "jpeg bomb": ({"items": [{"image": {"b64": b64(jpeg_claiming(30000, 30000))}}]}, 422, "items[0].image",
                  "30000x30000"),
    # Each frame is within the per-image cap; all frames together are not (they would all be decoded).
    "dicom frames": ({"items": [{"image": {"b64": b64(multiframe_dicom(4096, 4096, 2))}}]}, 422,
                     "items[0].image", "2 frames"),
    # Each X-ray is within the per-image cap; together they are over the request's pixel budget.
    "request pixel budget": (
        {"items": [{"image": {"b64": b64(png_of(3000, 3000))}} for _ in range(3)], "n": 1, "max_tokens": 1},
        422, "items", f"budget of {MAX_REQUEST_PIXELS}",
    ),
    "seed beyond 64 bits": ({"items": [good_item()], "seed": 2**64 + 5}, 422, "seed", "less than or equal"),
    "role the chat template has not": (
        {"items": [{**good_item(), "messages": [{"role": "tool", "content": "hi"}]}]}, 422,
        "items[0].messages[0].role", "input should be",
    ),
}  # fmt: skip


def chat_body(image: bytes | None = None, **fields) -> dict:
    image = image if image is not None else png_bytes(noise_xray(0, size=64))
    user = {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(image)}"}},
            {"type": "text", "text": "Findings?"},
        ],
    }
    return {"model": "base", "messages": [user], "max_tokens": 2, **fields}


URL = "messages[0].content[0].image_url.url"
CHAT_CASES = {
    "png bomb": (chat_body(png_claiming(20000, 20000)), 422, URL, "20000x20000"),
    "jpeg bomb": (chat_body(jpeg_claiming(30000, 30000)), 422, URL, "30000x30000"),
    "dicom frames": (chat_body(multiframe_dicom(4096, 4096, 2)), 422, URL, "2 frames"),
    "not an image": (chat_body(b"hello, I am text" * 20), 422, URL, "not a JPEG"),
    "invalid base64": (
        {**chat_body(), "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}}]}]},
        422, URL, "base64",
    ),
    "image by web address": (
        {**chat_body(), "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.org/x.png"}}]}]},
        422, URL, "data URI",
    ),
    "no image": ({**chat_body(), "messages": [{"role": "user", "content": "hi"}]}, 422, "messages", "image"),
    "two images": (
        {**chat_body(), "messages": [chat_body()["messages"][0], chat_body()["messages"][0]]},
        422, "messages[1].content[0].image_url.url", "one image",
    ),
    "tool role": (
        {**chat_body(), "messages": [chat_body()["messages"][0], {"role": "tool", "content": "x"}]},
        422, "messages[1].role", "input should be",
    ),
    "content part not an object": (
        {**chat_body(), "messages": [{"role": "user", "content": ["just a string"]}]},
        422, "messages[0].content[0]", "object",
    ),
    "content part of unknown type": (
        {**chat_body(), "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
        422, "messages[0].content[0].type", "input_audio",
    ),
    "temperature over vLLM's bound": (chat_body(temperature=3.0), 422, "temperature", "less than or equal"),
    "n over limit": (chat_body(n=9), 422, "n", "limit"),
    "max_tokens over model length": (chat_body(max_tokens=4096), 422, "max_tokens", "max_model_len"),
    "seed beyond 64 bits": (chat_body(seed=2**64 + 5), 422, "seed", "less than or equal"),
    "top_logprobs without logprobs": (chat_body(top_logprobs=2), 422, "top_logprobs", "logprobs"),
    "top_logprobs over 20": (chat_body(logprobs=True, top_logprobs=21), 422, "top_logprobs", "20"),
    "unknown model": (chat_body(model="ghost"), 404, "model", "ghost"),
    "messages not a list": ({**chat_body(), "messages": "hello"}, 422, "messages", "list"),
}  # fmt: skip


def refusal(url: str, case: tuple) -> dict:
    """POST a bad case's body: the answer has the case's status and an error naming its field and
    reason. Returns the error."""
    body, status, field, reason = case
    response = httpx.post(url, json=body, headers=AUTH, timeout=120)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert reason.lower() in error["reason"].lower()
    return error


@pytest.mark.parametrize("case", sorted(CHAT_CASES))
def test_bad_chat_request(rollout_server, case):
    error = refusal(f"{rollout_server.url}/v1/chat/completions", CHAT_CASES[case])
    field = CHAT_CASES[case][2]
    assert error["param"] == field and field in error["message"]  # OpenAI's error shape as well


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_rollout_request(rollout_server, case):
    refusal(f"{rollout_server.url}/v1/rollouts", CASES[case])


@pytest.mark.parametrize("endpoint", ["/v1/rollouts", "/v1/chat/completions"])
def test_body_over_the_limit_is_refused_before_reading(rollout_server, endpoint):
    body = b'{"items": [{"image": {"b64": "' + b"A" * 16_500_000 + b'"}}]}'
    response = httpx.post(
        f"{rollout_server.url}{endpoint}",
        content=body,
        headers={**AUTH, "content-type": "application/json"},
        timeout=120,
    )
    assert response.status_code == 413
    assert response.json()["error"]["field"] == "body"


@pytest.mark.parametrize("endpoint", ["/v1/rollouts", "/v1/chat/completions"])
def test_chunked_body_over_the_limit_is_a_413(rollout_server, endpoint):
    """No Content-Length to refuse up front: the server counts as the chunks arrive."""

    def chunks():
        yield b'{"items": [{"image": {"b64": "'
        for _ in range(17):
            yield b"A" * 1_000_000
        yield b'"}}]}'

    response = httpx.post(
        f"{rollout_server.url}{endpoint}",
        content=chunks(),
        headers={**AUTH, "content-type": "application/json"},
        timeout=120,
    )
    assert response.status_code == 413, response.text
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


def test_malformed_json_and_unknown_routes_are_4xx_json(rollout_server):
    broken = httpx.post(
        f"{rollout_server.url}/v1/rollouts",
        content=b'{"items": [',
        headers={**AUTH, "content-type": "application/json"},
    )
    assert broken.status_code == 422 and broken.json()["error"]["field"] == "body"
    missing = httpx.get(f"{rollout_server.url}/v1/nothing-here", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "path"
    wrong_method = httpx.put(f"{rollout_server.url}/v1/rollouts", headers=AUTH)
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["field"] == "method"


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
