"""A seeded random mix of malformed requests (fuzzed JSON, wrong types, huge numbers, odd images, odd
bodies) against every endpoint: no answer is a 5xx, every refusal is JSON naming a field, and the
server still serves a good request afterwards."""

import json
import random

import httpx
import pytest

from tests.integration.conftest import API_TOKEN
from tests.malformed import jpeg_claiming, multiframe_dicom, png_claiming
from tests.support import b64, noise_xray, png_bytes

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
REQUESTS = 120


def odd_images(rng: random.Random) -> list[bytes]:
    png = png_bytes(noise_xray(1, size=32))
    return [
        b"",
        rng.randbytes(64),
        png[: len(png) // 2],  # truncated
        png[:8] + rng.randbytes(len(png) - 8),  # a PNG signature over noise
        b"\xff\xd8\xff" + rng.randbytes(200),  # a JPEG start over noise
        b"\0" * 128 + b"DICM" + rng.randbytes(300),  # a DICOM preamble over noise
        png_claiming(70000, 70000),
        png_claiming(0, 10),
        jpeg_claiming(65535, 65535),
        jpeg_claiming(0, 0),
        multiframe_dicom(128, 128, 2000),
    ]


def odd_values(rng: random.Random) -> list:
    return [
        None, True, -1, 0, 2**70, -(2**70), 1e308, -1e308, 0.5, "", "x" * 1000, "😀", [], {}, [1, "a"],
        {"name": 3}, rng.random(), rng.randint(-(10**6), 10**6), "NaN", "base", "ghost:-1", "a:b:c",
    ]  # fmt: skip


def good_rollout(image: bytes) -> dict:
    return {
        "items": [{"item_id": "x", "image": {"b64": b64(image)}, "prompt_format": "reasoning_a"}],
        "n": 1,
        "max_tokens": 2,
        "seed": 1,
    }


def good_chat(image: bytes) -> dict:
    url = f"data:image/png;base64,{b64(image)}"
    return {
        "model": "base",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "?"}]},
        ],
        "max_tokens": 2,
        "seed": 1,
    }  # fmt: skip


def paths(value, prefix=()):
    """Every (path, value) inside a JSON value, the value itself included."""
    yield prefix, value
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from paths(inner, (*prefix, index))


def replaced(value, path, new):
    if not path:
        return new
    copy = json.loads(json.dumps(value))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return copy


def mutate(rng: random.Random, body: dict, images: list[bytes], values: list) -> dict:
    """One to three mutations: a value swapped for an odd one, an image for an odd image, a key
    dropped or added."""
    for _ in range(rng.randint(1, 3)):
        spots = list(paths(body))
        path, current = rng.choice(spots)
        roll = rng.random()
        if isinstance(current, str) and (len(current) > 200 or current.startswith("data:")) and roll < 0.6:
            data = b64(rng.choice(images))
            body = replaced(
                body, path, f"data:image/png;base64,{data}" if current.startswith("data:") else data
            )
        elif isinstance(current, dict) and current and roll < 0.2:
            body = replaced(body, path, {k: v for k, v in current.items() if k != rng.choice(list(current))})
        elif isinstance(current, dict) and roll < 0.3:
            body = replaced(body, path, {**current, rng.choice(["extra", "logit_bias", "n", "tools"]): 1})
        else:
            body = replaced(body, path, rng.choice(values))
    return body


def raw_bodies(rng: random.Random, good: bytes) -> list[tuple[bytes, str]]:
    return [
        (good[: rng.randint(0, len(good) - 1)], "application/json"),  # truncated JSON
        (b"\xff\xfe" + rng.randbytes(100), "application/json"),  # not UTF-8
        (b"[" * 5000 + b"]" * 5000, "application/json"),  # deep nesting
        (b'{"items": NaN, "n": Infinity}', "application/json"),
        (good, "text/plain"),
        (good, "multipart/form-data; boundary=zzz"),
        (rng.randbytes(300), "application/octet-stream"),
        (b"", "application/json"),
        (b"null", "application/json"),
    ]


def fuzzed_requests(rng: random.Random) -> list[tuple[str, str, dict]]:
    images, values = odd_images(rng), odd_values(rng)
    image = png_bytes(noise_xray(2, size=32))
    bodies = {"/v1/rollouts": good_rollout(image), "/v1/chat/completions": good_chat(image)}
    adapter_bodies = [{"name": "fz", "path": "../../etc"}, {"name": "../x", "path": "a"}, {"name": "fz"}]
    requests = []
    for _ in range(REQUESTS):
        roll = rng.random()
        if roll < 0.7:
            endpoint = rng.choice(list(bodies))
            body = mutate(rng, bodies[endpoint], images, values)
            requests.append(
                (
                    "POST",
                    endpoint,
                    {"content": json.dumps(body).encode(), "headers": {"content-type": "application/json"}},
                )
            )
        elif roll < 0.85:
            endpoint = rng.choice(list(bodies))
            content, kind = rng.choice(raw_bodies(rng, json.dumps(bodies[endpoint]).encode()))
            requests.append(("POST", endpoint, {"content": content, "headers": {"content-type": kind}}))
        elif roll < 0.95:
            body = mutate(rng, rng.choice(adapter_bodies), images, values)
            requests.append(("POST", "/v1/adapters", {"json": body}))
        else:
            files = {"weights": ("adapter_model.safetensors", rng.randbytes(rng.randint(0, 400)))}
            data = {
                "config": rng.choice(['{"r": 4}', "not json", "{}", '{"r": 999}']),
                "version": rng.choice(["1", "x", "-5"]),
            }
            requests.append(
                (
                    "POST",
                    f"/v1/adapters/{rng.choice(['fz', '..', 'a b'])}/versions",
                    {"files": files, "data": data},
                )
            )
    return requests


def test_fuzzed_requests_never_get_a_5xx_and_the_server_stays_up(rollout_server):
    rng = random.Random(16)
    answers = []
    with httpx.Client(base_url=rollout_server.url, headers=AUTH, timeout=300) as http:
        for method, endpoint, kwargs in fuzzed_requests(rng):
            response = http.request(method, endpoint, **kwargs)
            answers.append((endpoint, response.status_code, response.text[:300]))
            assert response.status_code < 500, (endpoint, kwargs.get("content", b"")[:300], response.text)
            if response.status_code >= 400:
                error = response.json()["error"]
                assert error["field"] and error["reason"], response.text
        refused = sum(status >= 400 for _, status, _ in answers)
        assert refused >= REQUESTS // 2  # the mix is mostly malformed, so mostly refused
        assert http.get("/health").json() == {"status": "ok"}
        image = png_bytes(noise_xray(3, size=64))
        good = http.post("/v1/rollouts", json=good_rollout(image))
        assert good.status_code == 200 and len(good.json()["results"][0]["completions"]) == 1
        chat = http.post("/v1/chat/completions", json=good_chat(image))
        assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["role"] == "assistant"


def test_base64_of_every_odd_image_is_refused_by_both_endpoints(rollout_server):
    """The odd images on their own (no other mutation): each is a 422 naming the image field."""
    rng = random.Random(7)
    with httpx.Client(base_url=rollout_server.url, headers=AUTH, timeout=300) as http:
        for image in odd_images(rng):
            rollout = http.post("/v1/rollouts", json=good_rollout(image))
            assert rollout.status_code == 422, rollout.text
            assert rollout.json()["error"]["field"].startswith("items[0].image")
            chat = http.post("/v1/chat/completions", json=good_chat(image))
            assert chat.status_code == 422, chat.text
            assert chat.json()["error"]["field"] == "messages[1].content[0].image_url.url"
