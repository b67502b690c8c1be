"""The rollout server as an OpenAI user meets it: the official `openai` client, the served model name
vLLM's convention gives (the --model argument), adapters as models, streaming, logprobs, system
messages, against a real `cxr-rl serve` process on 127.0.0.1."""

import json

import httpx
import openai
import pytest

from tests.integration.conftest import API_TOKEN
from tests.support import b64, noise_xray, png_bytes, random_adapter

pytestmark = pytest.mark.integration


def xray_messages(seed: int = 5, system: str | None = None, role: str = "system") -> list[dict]:
    image = b64(png_bytes(noise_xray(seed)))
    messages = [{"role": role, "content": system}] if system else []
    messages.append(
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
                {"type": "text", "text": "List the findings."},
            ],
        }
    )
    return messages


@pytest.fixture(scope="module")
def openai_client(rollout_server):
    with openai.OpenAI(base_url=f"{rollout_server.url}/v1", api_key=API_TOKEN, max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def served_name(tiny_medgemma):
    return str(tiny_medgemma)  # vLLM's default served model name: the --model argument


@pytest.fixture(scope="module")
def loaded_adapter(client_module, tiny_medgemma):
    from trainer.lora import adapter_update

    info = client_module.load_adapter(
        adapter_update(random_adapter(tiny_medgemma, seed=3), "policy", "oai", None)
    )
    yield info
    client_module.unload_adapter("oai")


@pytest.fixture(scope="module")
def client_module(rollout_server):
    from rollout_server.client import RolloutClient

    with RolloutClient(rollout_server.url, token=API_TOKEN, timeout_s=300) as client:
        yield client


def test_models_lists_the_base_model_and_every_live_adapter_version(
    openai_client, served_name, loaded_adapter
):
    models = {model.id: model for model in openai_client.models.list()}
    assert served_name in models and models[served_name].object == "model"
    assert f"oai:{loaded_adapter.version}" in models
    assert models[f"oai:{loaded_adapter.version}"].model_extra["parent"] == served_name
    assert openai_client.models.retrieve(served_name).id == served_name
    with pytest.raises(openai.NotFoundError):
        openai_client.models.retrieve("nobody")


@pytest.mark.parametrize("model", ["served", "base", "NAME", "NAME:VERSION"])
def test_every_model_name_an_openai_user_may_pass(openai_client, served_name, loaded_adapter, model):
    name = {
        "served": served_name,
        "base": "base",
        "NAME": "oai",
        "NAME:VERSION": f"oai:{loaded_adapter.version}",
    }[model]
    answer = openai_client.chat.completions.create(
        model=name, messages=xray_messages(), max_tokens=4, n=2, temperature=0.8, seed=1
    )
    assert answer.object == "chat.completion" and answer.model == name
    assert len(answer.choices) == 2 and all(isinstance(c.message.content, str) for c in answer.choices)
    assert answer.usage.completion_tokens >= 2


def test_an_unknown_model_is_a_404_naming_the_model(openai_client):
    with pytest.raises(openai.NotFoundError) as caught:
        openai_client.chat.completions.create(model="ghost", messages=xray_messages(), max_tokens=2)
    assert caught.value.body["field"] == "model" or caught.value.body.get("param") == "model"


@pytest.mark.parametrize("role", ["system", "developer"])
def test_system_messages_are_accepted(openai_client, served_name, role):
    answer = openai_client.chat.completions.create(
        model=served_name,
        messages=xray_messages(system="You are a radiologist.", role=role),
        max_tokens=3,
        seed=2,
    )
    assert answer.choices[0].message.content is not None


def test_streaming_sends_the_same_completions_as_chunks_ending_in_done(
    openai_client, rollout_server, served_name
):
    request = {
        "model": served_name,
        "messages": xray_messages(seed=8),
        "n": 2,
        "max_tokens": 6,
        "temperature": 1.0,
        "seed": 4,
        "extra_body": {"min_tokens": 6},
    }
    whole = openai_client.chat.completions.create(**request)
    chunks = list(
        openai_client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True})
    )
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    texts = {0: "", 1: ""}
    finish = {}
    for chunk in chunks[:-1]:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    assert texts == {c.index: c.message.content for c in whole.choices}
    assert finish == {0: "length", 1: "length"}
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage.completion_tokens == 12
    assert usage.usage.prompt_tokens == whole.usage.prompt_tokens

    # On the wire: server-sent events, the last one `[DONE]`.
    body = {k: v for k, v in request.items() if k != "extra_body"} | {"stream": True}
    with httpx.stream(
        "POST",
        f"{rollout_server.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {API_TOKEN}"},
        timeout=120,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["choices"][0]["delta"]["role"] == "assistant"


def test_logprobs_and_top_logprobs_as_openai_defines_them(openai_client, served_name):
    answer = openai_client.chat.completions.create(
        model=served_name,
        messages=xray_messages(seed=9),
        max_tokens=5,
        seed=3,
        logprobs=True,
        top_logprobs=3,
        extra_body={"min_tokens": 5},
    )
    content = answer.choices[0].logprobs.content
    assert len(content) == answer.usage.completion_tokens == 5
    for entry in content:
        assert entry.logprob <= 0.0 and entry.bytes == list(entry.token.encode())
        top = [item.logprob for item in entry.top_logprobs]
        assert len(top) == 3 and top == sorted(top, reverse=True)
        assert entry.logprob <= top[0] + 1e-6  # the sampled token is never more likely than the best
        if entry.token in {item.token for item in entry.top_logprobs}:
            assert any(abs(item.logprob - entry.logprob) < 1e-6 for item in entry.top_logprobs)
    plain = openai_client.chat.completions.create(
        model=served_name, messages=xray_messages(seed=9), max_tokens=2, seed=3
    )
    assert plain.choices[0].logprobs is None
    only = openai_client.chat.completions.create(
        model=served_name, messages=xray_messages(seed=9), max_tokens=2, seed=3, logprobs=True
    )
    assert all(entry.top_logprobs == [] for entry in only.choices[0].logprobs.content)


def test_logprobs_stream_with_their_tokens(openai_client, served_name):
    chunks = list(
        openai_client.chat.completions.create(
            model=served_name,
            messages=xray_messages(seed=10),
            max_tokens=4,
            seed=6,
            logprobs=True,
            top_logprobs=2,
            stream=True,
            extra_body={"min_tokens": 4},
        )
    )
    entries = [e for chunk in chunks for c in chunk.choices if c.logprobs for e in c.logprobs.content]
    assert len(entries) == 4 and all(len(e.top_logprobs) == 2 for e in entries)
