"""Each X-ray goes through the vision tower once per forward pass, not once per completion: the G
rows of a group share one encoding, and the logprobs are those of the plain transformers inputs
(each row with its own copy of the pixels) within 1e-5 in float32, on both tiny architectures."""

import pytest
import torch

from tests.support import logprobs_by_hand, tiny_model_and_prompt

COMPLETIONS = [[40, 41, 42, 43, 44, 45], [50, 51, 52], [60, 61, 62, 63]]
TOLERANCE = 1e-5


@pytest.fixture(scope="module", params=["medgemma", "qwen2.5-vl"])
def model_and_prompt(request, phantom_root):
    fixture = "tiny_medgemma" if request.param == "medgemma" else "tiny_qwen"
    return tiny_model_and_prompt(request.getfixturevalue(fixture), phantom_root)


class ImagesEncoded:
    """Counts the images the vision tower is handed (Gemma3's SigLIP: a pixel batch; Qwen-VL's:
    one grid row per image)."""

    def __init__(self, model):
        inner = (model.get_base_model() if hasattr(model, "get_base_model") else model).model
        tower = getattr(inner, "vision_tower", None) or inner.visual
        self.count = 0
        self.handle = tower.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, _module, args, kwargs):
        if kwargs.get("grid_thw") is not None:
            self.count += kwargs["grid_thw"].shape[0]
        else:
            self.count += (kwargs.get("pixel_values") if "pixel_values" in kwargs else args[0]).shape[0]

    def take(self) -> int:
        count, self.count = self.count, 0
        return count


def test_each_xray_is_encoded_once_per_pass_and_the_logprobs_are_unchanged(model_and_prompt):
    from trainer.logprobs import completion_batch, policy_logprobs

    model, prompt = model_and_prompt
    batch = completion_batch(prompt, COMPLETIONS, pad_id=0, causal_images=True)
    mask = batch.completion_mask.bool()
    encoded = ImagesEncoded(model)
    try:
        with torch.no_grad():
            tempered = policy_logprobs(model, batch, 0.8, with_raw=True)
        assert encoded.take() == 1  # one X-ray, G = 3 completions: encoded once
        expected_tempered = logprobs_by_hand(model, batch, 0.8)
        expected_raw = logprobs_by_hand(model, batch, 1.0)
        assert encoded.take() == 2 * len(COMPLETIONS)  # the plain inputs encode it once per row
    finally:
        encoded.handle.remove()
    worst = max(
        (tempered.logprobs - expected_tempered)[mask].abs().max().item(),
        (tempered.raw - expected_raw)[mask].abs().max().item(),
    )
    print(f"shared encoding vs per-row pixels: max |logprob difference| {worst:.1e}")
    assert worst < TOLERANCE


def test_one_encoding_serves_every_adapter_when_no_adapter_touches_the_vision_path(
    tiny_medgemma, phantom_root
):
    """The trainer encodes each X-ray once per step and hands it to the policy, reference and
    behaviour passes; that is exact only while the vision path holds no adapter and no gradient."""
    from peft import LoraConfig, get_peft_model

    from tests.support import random_adapter
    from trainer.logprobs import completion_batch, image_encoding, policy_logprobs, vision_is_frozen

    model, prompt = tiny_model_and_prompt(tiny_medgemma, phantom_root)
    batch = completion_batch(prompt, COMPLETIONS, pad_id=0, causal_images=True)
    mask = batch.completion_mask.bool()
    policy = random_adapter(tiny_medgemma, seed=3, scale=0.05)
    assert vision_is_frozen(policy)
    with torch.no_grad():
        shared = image_encoding(policy, batch)
        with_shared = policy_logprobs(policy, batch, image=shared).logprobs
        own = policy_logprobs(policy, batch).logprobs
        with policy.disable_adapter():  # another adapter state, the same encoding
            base_shared = policy_logprobs(policy, batch, image=shared).logprobs
            base_own = policy_logprobs(policy, batch).logprobs
    assert (with_shared - own)[mask].abs().max() < TOLERANCE
    assert (base_shared - base_own)[mask].abs().max() < TOLERANCE
    assert (with_shared - base_shared)[mask].abs().max() > 1e-3  # the adapter does change the logprobs

    fresh, _ = tiny_model_and_prompt(tiny_medgemma, phantom_root)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=r".*vision_tower.*\.q_proj")
    assert not vision_is_frozen(get_peft_model(fresh, config))
