"""The trainer's logprobs on the tiny MedGemma (which sees its X-rays): at the loss temperature, raw
for the comparison with the server, and with the image mask the server uses."""

import pytest
import torch

from tests.support import logprobs_by_hand, tiny_model_and_prompt
from trainer.grpo.loss import GrpoLossSettings, loss_temperature

COMPLETIONS = [[40, 41, 42, 43, 44, 45], [50, 51, 52]]


@pytest.fixture(scope="module")
def model_and_prompt(tiny_medgemma, phantom_root):
    return tiny_model_and_prompt(tiny_medgemma, phantom_root)


def test_logprobs_at_the_loss_temperature_and_raw_for_the_agreement_check(model_and_prompt):
    from trainer.logprobs import completion_batch, policy_logprobs

    model, prompt = model_and_prompt
    batch = completion_batch(prompt, COMPLETIONS, pad_id=0, causal_images=True)
    mask = batch.completion_mask.bool()
    with torch.no_grad():
        tempered = policy_logprobs(model, batch, 0.8, with_entropy=True, with_raw=True)
        raw = policy_logprobs(model, batch, 1.0, with_raw=True)
    assert torch.allclose(tempered.logprobs[mask], logprobs_by_hand(model, batch, 0.8)[mask], atol=1e-5)
    assert torch.allclose(tempered.raw[mask], logprobs_by_hand(model, batch, 1.0)[mask], atol=1e-5)
    assert torch.allclose(raw.logprobs[mask], tempered.raw[mask], atol=1e-6)
    assert (tempered.logprobs - tempered.raw)[mask].abs().max() > 1e-2  # the two really differ
    assert tempered.entropy.shape == batch.completion_ids.shape and (tempered.entropy[mask] > 0).all()


def test_the_image_mask_changes_what_a_seeing_model_computes(model_and_prompt):
    """Gemma3 attends bidirectionally among an image's tokens unless told otherwise; on a model
    whose image tokens carry the image, the two masks give different logprobs."""
    from trainer.logprobs import completion_batch, policy_logprobs

    model, prompt = model_and_prompt
    causal = completion_batch(prompt, COMPLETIONS, pad_id=0, causal_images=True)
    bidirectional = completion_batch(prompt, COMPLETIONS, pad_id=0, causal_images=False)
    mask = causal.completion_mask.bool()
    with torch.no_grad():
        a = policy_logprobs(model, causal).logprobs[mask]
        b = policy_logprobs(model, bidirectional).logprobs[mask]
    assert (a - b).abs().max() > 1e-3


def test_loss_temperature_follows_the_setting():
    assert loss_temperature(GrpoLossSettings(), 0.8) == 0.8  # default: the sampling distribution
    assert loss_temperature(GrpoLossSettings(logprobs="raw"), 0.8) == 1.0
    with pytest.raises(ValueError, match="logprobs"):
        GrpoLossSettings(logprobs="processed")
