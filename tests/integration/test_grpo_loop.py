"""GRPO end to end on CPU: a real rollout server as a Ray actor, a real reward worker behind the
reward router, the trainer with PEFT, LoRA-only sync through Ray's object store."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.support import random_adapter

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rollout_actor(local_ray, tiny_medgemma):
    from rollout_server.actor import RolloutServerActor
    from rollout_server.config import EngineConfig, ServerConfig

    config = ServerConfig(engine=EngineConfig(model=str(tiny_medgemma), max_model_len=2048), port=0)
    actor = local_ray.remote(RolloutServerActor).options(num_cpus=1).remote(config)
    url = local_ray.get(actor.start.remote())
    yield actor, url
    local_ray.get(actor.stop.remote())
    local_ray.kill(actor)


@pytest.fixture(scope="module")
def sft_adapter(tiny_medgemma, tmp_path_factory):
    """A stand-in SFT checkpoint: random but non-zero LoRA weights, saved by PEFT."""
    folder = tmp_path_factory.mktemp("sft") / "adapter"
    random_adapter(tiny_medgemma, seed=21, scale=0.02).save_pretrained(folder, selected_adapters=["policy"])
    return folder / "policy" if (folder / "policy").is_dir() else folder


def grpo_trainer(run_dir, name, tiny_medgemma, phantom_root, sft_adapter, actor, url, local_ray):
    from rewards.client import RewardClient
    from rewards.router import start_router
    from trainer.grpo import GrpoTrainer
    from trainer.grpo_config import GrpoConfig
    from trainer.rollouts import RolloutDispatcher
    from trainer.sync import RayAdapterPublisher

    config = GrpoConfig.model_validate(
        {
            "model": str(tiny_medgemma),
            "sft_adapter": str(sft_adapter),
            "rl_manifest": str(phantom_root / "manifests" / "mimic_train.jsonl"),
            "batch_size": 2,
            "max_steps": 3,
            "sampling": {"group_size": 4, "max_tokens": 24},
            "optim": {"lr": 5e-3},
            "reward": {"spec": "hard", "config": {"min_tokens": 8}},
            "adapter_name": name,
            "seed": 3,
            "gradient_checkpointing": False,
        }
    )
    try:
        router = local_ray.get_actor("reward-router")
    except ValueError:
        router = start_router("hard", {"min_tokens": 8})
    return GrpoTrainer(
        config,
        run_dir,
        RolloutDispatcher([url]),
        RayAdapterPublisher([actor]),
        RewardClient.for_router(router),
    )


def test_three_grpo_steps_with_live_adapter_sync(
    tmp_path, tiny_medgemma, phantom_root, sft_adapter, rollout_actor, local_ray
):
    actor, url = rollout_actor
    trainer = grpo_trainer(
        tmp_path / "run", "e2e", tiny_medgemma, phantom_root, sft_adapter, actor, url, local_ray
    )
    trainer.setup()
    versions = [
        info["version"] for info in local_ray.get(actor.stats.remote())["adapters"] if info["name"] == "e2e"
    ]
    assert versions == [0]
    steps = [trainer.step() for _ in range(3)]
    assert [m["policy_version"] for m in steps] == [0, 1, 2]  # completions of step k came from version k
    assert [m["published_version"] for m in steps] == [1, 2, 3]
    live = [
        info["version"] for info in local_ray.get(actor.stats.remote())["adapters"] if info["name"] == "e2e"
    ]
    assert live == [3]
    for metrics in steps:
        assert metrics["logprob_diff_max"] < 1e-3, metrics  # train/inference agreement after each sync
        assert metrics["sync_bytes"] > 0 and metrics["sync_s"] > 0
        for key in (
            "reward_mean",
            "kl",
            "entropy",
            "clip_low_frac",
            "grad_norm",
            "rollout_s",
            "train_s",
            "zero_variance_groups",
        ):
            assert key in metrics
    assert steps[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the policy starts as the reference
    assert steps[2]["kl"] > 0.0
    checkpoint = tmp_path / "run" / "checkpoints" / "step-000003"
    assert json.loads((checkpoint / "state.json").read_text())["step"] == 3


def test_resume_after_step_two_matches_an_uninterrupted_run(
    tmp_path, tiny_medgemma, phantom_root, sft_adapter, rollout_actor, local_ray
):
    actor, url = rollout_actor
    whole = grpo_trainer(
        tmp_path / "whole", "whole", tiny_medgemma, phantom_root, sft_adapter, actor, url, local_ray
    )
    whole.setup()
    whole.train()
    interrupted = grpo_trainer(
        tmp_path / "parts", "parts", tiny_medgemma, phantom_root, sft_adapter, actor, url, local_ray
    )
    interrupted.setup()
    interrupted.train(stop_after=2)
    del interrupted
    resumed = grpo_trainer(
        tmp_path / "parts", "parts", tiny_medgemma, phantom_root, sft_adapter, actor, url, local_ray
    )
    resumed.setup(resume=True)
    assert resumed.step_count == 2
    resumed.train()
    a = load_file(
        tmp_path / "whole" / "checkpoints" / "step-000003" / "adapter" / "adapter_model.safetensors"
    )
    b = load_file(
        tmp_path / "parts" / "checkpoints" / "step-000003" / "adapter" / "adapter_model.safetensors"
    )
    assert a.keys() == b.keys()
    worst = max((a[key] - b[key]).abs().max().item() for key in a)
    assert worst < 1e-5
    moved = max((a[key] - 0).abs().max().item() for key in a if "lora_B" in key)
    assert moved > 0
    assert torch.is_tensor(next(iter(a.values())))
