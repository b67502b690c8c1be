"""Two rollout replicas on one machine: the trainer spreads each batch over both, and every new
adapter version reaches both."""

import re

import httpx
import pytest

pytestmark = pytest.mark.integration


def completions_served(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return float(re.search(r"^cxr_rl_completions_total (\S+)$", text, re.MULTILINE).group(1))


def test_two_replicas_share_rollouts_and_get_every_version(tmp_path, local_ray, tiny_medgemma, phantom_root):
    from rewards.client import RewardClient
    from rewards.registry import load_reward
    from rollout_server.actor import RolloutServerActor
    from rollout_server.config import EngineConfig, ServerConfig
    from trainer.grpo.config import GrpoConfig
    from trainer.grpo.trainer import GrpoTrainer
    from trainer.rollouts import RolloutDispatcher
    from trainer.sync import RayAdapterPublisher

    server_config = ServerConfig(engine=EngineConfig(model=str(tiny_medgemma), max_model_len=2048), port=0)
    replicas = [
        local_ray.remote(RolloutServerActor).options(num_cpus=0.5).remote(server_config) for _ in range(2)
    ]
    try:
        urls = local_ray.get([replica.start.remote() for replica in replicas])
        assert len(set(urls)) == 2
        config = GrpoConfig.model_validate(
            {
                "model": str(tiny_medgemma),
                "rl_manifest": str(phantom_root / "manifests" / "mimic_train.jsonl"),
                "batch_size": 4,
                "max_steps": 2,
                "sampling": {"group_size": 4, "max_tokens": 16},
                "adapter_name": "pair",
                "gradient_checkpointing": False,
            }
        )
        rewards = RewardClient.in_process(load_reward("hard", {"min_tokens": 4}))
        trainer = GrpoTrainer(
            config, tmp_path, RolloutDispatcher(urls), RayAdapterPublisher(replicas), rewards
        )
        trainer.setup()
        before = [completions_served(url) for url in urls]
        metrics = [trainer.step() for _ in range(2)]
        assert [m["policy_version"] for m in metrics] == [0, 1]
        served = [completions_served(url) - start for url, start in zip(urls, before, strict=True)]
        assert served == [2 * 2 * 4, 2 * 2 * 4]  # two X-rays x G=4 per replica per step
        for replica in replicas:
            stats = local_ray.get(replica.stats.remote())
            assert [(a["name"], a["version"]) for a in stats["adapters"]] == [("pair", 2)]
            assert stats["swaps"] == 3  # versions 0, 1 and 2 each loaded on this replica
    finally:
        for replica in replicas:
            local_ray.get(replica.stop.remote())
            local_ray.kill(replica)
