"""The rule that reports an adapter version live (rollout_server.canary), on canary numbers of the
sizes measured on tiny MedGemma: bf16 implementations ~3e-2 apart per token, an lr-1e-5 step
moving a token by ~1e-4 in float32 and by bf16 rounding (~3e-2) in bf16."""

import numpy as np
import pytest

from rollout_server.canary import CanaryRefused, judge
from shared.schemas import CanaryCheck, CanaryReference

TOKENS = 32


def draw(seed: int, scale: float) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, scale, TOKENS)


def check(expected, reference, *, tolerance, resolution, version=0) -> tuple[CanaryCheck, CanaryReference]:
    sent = CanaryReference(version=version, logprobs=list(reference))
    ids = list(range(2, TOKENS + 3))  # the canary prompt: one id more than logprobs
    return CanaryCheck(
        token_ids=ids, expected=list(expected), tolerance=tolerance, references=[sent], resolution=resolution
    ), sent


def bf16_case(seed: int = 0):
    """The sender's (bf16 trainer) canary under version k-1 and k, and the server's (another bf16
    implementation) under k-1: 3e-2 apart, each move pure rounding noise."""
    base = -8.0 + draw(seed, 2.0)
    sender_before = base + draw(seed + 1, 0.03)
    sender_after = sender_before + draw(seed + 2, 0.03)  # what rounding makes of a 1e-4 move
    served_before = base + draw(seed + 3, 0.03)
    return sender_before, sender_after, served_before


def test_a_stale_bf16_load_is_refused():
    sender_before, sender_after, served_before = bf16_case()
    sent_check, sent = check(sender_after, sender_before, tolerance=0.25, resolution=3e-2)
    stale = served_before  # the engine still serves version k-1: the same numbers, bit for bit
    with pytest.raises(CanaryRefused, match="did not change .* the load did not take"):
        judge(list(stale), list(served_before), "changed", sent_check, sent)


def test_a_live_bf16_load_passes_though_its_move_is_rounding_noise():
    sender_before, sender_after, served_before = bf16_case(seed=10)
    sent_check, sent = check(sender_after, sender_before, tolerance=0.25, resolution=3e-2)
    served_after = served_before + draw(20, 0.03)  # the server's own rounding of the same step
    reading = judge(list(served_after), list(served_before), "changed", sent_check, sent)
    assert reading.delta > 1e-3 and reading.agreement is None  # below both sides' rounding: no move check


def test_stale_tensors_under_a_moved_canary_are_refused():
    sender_before, sender_after, served_before = bf16_case(seed=30)
    sent_check, sent = check(sender_after, sender_before, tolerance=0.25, resolution=3e-2)
    with pytest.raises(CanaryRefused, match="stale upload"):
        judge(list(served_before), list(served_before), "same_tensors", sent_check, sent)


def test_an_update_bf16_rounds_away_is_no_failure():
    """New tensors that the engine's bf16 holds as the previous ones: the same outputs are right."""
    sender_before, sender_after, served_before = bf16_case(seed=40)
    sent_check, sent = check(sender_after, sender_before, tolerance=0.25, resolution=3e-2)
    reading = judge(list(served_before), list(served_before), "same_served", sent_check, sent)
    assert reading.delta == 0.0


def test_weights_that_do_not_change_the_outputs_need_no_change():
    """LoRA A moved, B = 0: the sender's own canary did not move at all, so neither must the server's."""
    before = -8.0 + draw(50, 2.0)
    sent_check, sent = check(before, before, tolerance=1e-3, resolution=1e-5)
    assert judge(list(before), list(before), "changed", sent_check, sent).move == 0.0
    exact = sent_check.model_copy(update={"resolution": 0.0})  # a sender that claims no rounding at all
    assert judge(list(before), list(before), "changed", exact, sent).agreement is None


def test_float32_moves_are_checked_in_size_and_direction():
    before = -8.0 + draw(60, 2.0)
    move = draw(61, 5e-3)  # picked tokens after one lr-1e-5 step, float32
    sent_check, sent = check(before + move, before, tolerance=1e-3, resolution=1e-5)
    live = judge(list(before + move + draw(62, 1e-6)), list(before), "changed", sent_check, sent)
    assert live.agreement == pytest.approx(1.0, abs=0.01)
    with pytest.raises(CanaryRefused, match="moved 2.00 times"):  # a LoRA scaling bug: twice the move
        judge(
            list(before + 2 * move),
            list(before),
            "changed",
            sent_check.model_copy(update={"tolerance": 1.0}),
            sent,
        )
    older = draw(63, 5e-3)  # the weights of another version
    with pytest.raises(CanaryRefused, match="times the sender's move"):
        judge(
            list(before + older),
            list(before),
            "changed",
            sent_check.model_copy(update={"tolerance": 1.0}),
            sent,
        )


def test_values_beyond_the_tolerance_are_refused():
    before = -8.0 + draw(70, 2.0)
    sent_check, sent = check(before + 0.5, before, tolerance=0.25, resolution=3e-2)
    with pytest.raises(CanaryRefused, match="differ from the sender's by up to 5.00e-01"):
        judge(list(before), list(before), "changed", sent_check, sent)


def test_without_a_check_new_weights_must_change_the_canary():
    before = list(-8.0 + draw(80, 2.0))
    with pytest.raises(CanaryRefused, match="did not change"):
        judge(before, before, "changed")
    assert judge(before, before, "same_tensors").delta == 0.0


def test_served_weights_compare_in_the_engines_lora_dtype(tmp_path):
    """What the server compares with its reference (rollout_server.adapters.servable_weights): the
    tensors as sent, and as the engine holds them; a LoRA with B = 0 serves the base model."""
    import torch
    from safetensors.torch import save_file

    from rollout_server.adapters import servable_weights

    def saved(name: str, b_scale: float, nudge: float = 0.0):
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(16, 64, generator=generator)
        b = (torch.randn(64, 16, generator=generator) * b_scale).to(torch.bfloat16).float() * (1 + nudge)
        folder = tmp_path / name
        folder.mkdir()
        key = "base_model.model.model.layers.0.self_attn.q_proj"
        save_file(
            {f"{key}.lora_A.weight": a, f"{key}.lora_B.weight": b}, folder / "adapter_model.safetensors"
        )
        return folder

    fresh = servable_weights(saved("fresh", 0.0), torch.bfloat16)
    assert fresh.inert
    trained = saved("trained", 0.02)
    stepped = saved("stepped", 0.02, nudge=1e-4)  # a relative step below bf16's resolution (2e-3)
    before, after = servable_weights(trained, torch.bfloat16), servable_weights(stepped, torch.bfloat16)
    assert not before.inert and before.tensors != after.tensors and before.served == after.served
    assert servable_weights(trained, torch.float32).served != servable_weights(stepped, torch.float32).served
