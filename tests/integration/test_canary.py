"""The canary proves a version live in bf16 at the shipped learning rate: a trainer in bfloat16
(its canary logprobs a few 1e-2 from the float32 server's, bf16-sized noise) takes real GRPO
steps at lr 1e-5 from an SFT-like adapter and publishes each version over HTTP; a version whose
upload carries the previous version's tensors (a load that did not take) is refused, the real one
is accepted. Before the move-based canary, bf16 allowed 0.1 per token and skipped the change
check when the trainer sent its numbers, so the stale version went live."""

import pytest

from tests.integration.test_grpo_fidelity import grpo_trainer

pytestmark = pytest.mark.integration


class StaleUpload:
    """An HTTP publisher whose transport delivers version 2 with version 1's tensors (the canary
    the trainer computed for version 2 travels unchanged): a load that did not take."""

    def __init__(self, clients):
        from trainer.sync import HttpAdapterPublisher

        self.inner = HttpAdapterPublisher(clients)
        self.sent: dict[int, bytes] = {}
        self.infos = []
        self.stale_sent = False

    def publish(self, update):
        self.sent[update.version] = update.safetensors
        if update.version == 2 and not self.stale_sent:
            self.stale_sent = True
            update = update.model_copy(update={"safetensors": self.sent[1]})
        result = self.inner.publish(update)
        self.infos.append([client.adapters() for client in self.inner.clients][0])
        return result

    def forget(self, name):
        self.inner.forget(name)


def sft_stand_in(model_dir, out):
    """A stand-in SFT adapter (random B ~ N(0, 0.02^2)): GRPO starts from SFT, where an lr-1e-5 Adam
    step is ~5e-4 of each weight, below bf16's resolution of the weights and the logits."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText

    from trainer.lora import LoraSettings

    base = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraSettings().peft_config(), adapter_name="policy")
    generator = torch.Generator().manual_seed(21)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    model.save_pretrained(out, selected_adapters=["policy"])
    return out / "policy" if (out / "policy").is_dir() else out


def test_a_stale_load_is_refused_in_bf16_at_lr_1e5(tmp_path, tiny_medgemma, phantom_root, rollout_server):
    from rollout_server.client import RolloutServerError

    options = {
        "dtype": "bfloat16",
        "optim": {"lr": 1e-5},
        "sft_adapter": str(sft_stand_in(tiny_medgemma, tmp_path / "sft")),
    }
    with grpo_trainer(
        tmp_path, "canary-bf16", tiny_medgemma, phantom_root, rollout_server, publisher=StaleUpload, **options
    ) as trainer:
        trainer.setup()  # version 0
        trainer.step()  # version 1: a real update at lr 1e-5, live
        (live,) = [info for info in trainer.publisher.infos[-1] if info.name == "canary-bf16"]
        assert live.version == 1 and live.canary_delta > 1e-6  # the served canary moved
        print(
            f"version 1 live: served canary moved by up to {live.canary_delta:.2e} (error {live.canary_error:.2e})"
        )
        with pytest.raises(RolloutServerError) as refused:
            trainer.step()  # version 2, delivered with version 1's tensors
        assert refused.value.status == 500 and "version 2" in refused.value.reason
        print(f"refused: {refused.value.reason}")
        served = [
            info.version
            for info in trainer.publisher.inner.clients[0].adapters()
            if info.name == "canary-bf16"
        ]
        assert served == [1]  # the stale version never went live
        assert trainer.publisher.publish(trainer.current_update()).version == 2  # the real one goes live


@pytest.mark.parametrize(
    ("canary", "field", "reason"),
    [
        ("[1, 2]", "canary", "a JSON object"),
        ('{"expected": []}', "canary.expected", "at least 1 item"),
        ('{"token_ids": [2, 5, 9], "expected": [-1.0]}', "canary", "1 logprobs for 3 token ids"),
        ('{"expected": [-1.0]}', "canary", "1 logprobs for 24 token ids"),
        ('{"token_ids": [2, 999999], "expected": [-1.0]}', "canary.token_ids", "out of vocabulary"),
    ],
)
def test_a_malformed_canary_is_a_422_naming_its_field(client, tiny_medgemma, canary, field, reason):
    import httpx

    from rollout_server.client import _upload
    from tests.integration.conftest import API_TOKEN
    from trainer.lora import adapter_update

    update = adapter_update(fresh_lora(tiny_medgemma), "policy", "bad-canary", version=None)
    upload = _upload(update)
    upload["data"]["canary"] = canary
    response = httpx.post(
        client.base_url + upload.pop("url"), headers={**upload.pop("headers"), "Authorization": f"Bearer {API_TOKEN}"},
        timeout=120, **upload,
    )  # fmt: skip
    error = response.json()["error"]
    assert (response.status_code, error["field"]) == (422, field) and reason in error["reason"], error
    assert all(info.name != "bad-canary" for info in client.adapters())


def fresh_lora(model_dir):
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText

    from trainer.lora import LoraSettings

    base = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    return get_peft_model(base, LoraSettings().peft_config(), adapter_name="policy")
