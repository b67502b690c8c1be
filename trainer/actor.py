"""The trainer as a Ray actor, placed by the driver: SFT, then GRPO one step per call, with the
rollout replicas (shared.replicas.RolloutReplicas) and the reward router handed over as Ray handles."""

import logging
from pathlib import Path
from typing import Any

import ray

from rewards.client import RewardClient
from shared.ray_calls import get_through_restarts
from shared.replicas import RolloutReplicas
from trainer.grpo.config import GrpoConfig
from trainer.model import cap_gpu_memory
from trainer.rollouts import RolloutDispatcher
from trainer.sft.config import SftConfig
from trainer.sync import RayAdapterPublisher

log = logging.getLogger("cxr_rl.trainer")


class TrainerActor:
    """Use through `ray.remote(TrainerActor)`."""

    def __init__(self, memory_fraction: float | None = None, planned_gpu_gib: float | None = None) -> None:
        """`memory_fraction`: the trainer's cap on a GPU shared with vLLM (deploy.memory.split),
        applied before any model is loaded; `planned_gpu_gib`: the GPU memory it was derived for."""
        self.grpo: Any = None
        self.replicas = RolloutReplicas([])
        self.events: list[str] = []
        if memory_fraction is not None:
            cap = cap_gpu_memory(memory_fraction, planned_gpu_gib or 0.0)
            log.info("trainer capped at %.1f GiB of GPU memory (fraction %g)", cap, memory_fraction)

    def run_sft(self, config: SftConfig, resume: bool = False) -> dict[str, Any]:
        # peft and transformers (seconds) load in the trainer's process, not in the driver that places it
        from trainer.sft.training import train_sft

        summary = train_sft(config, Path(config.out), resume=resume)
        return summary.model_dump(mode="json") if hasattr(summary, "model_dump") else dict(summary)

    def setup_grpo(
        self,
        config: GrpoConfig,
        run_dir: str,
        replicas: RolloutReplicas,
        router: Any,
        resume: bool = False,
        api_token: str | None = None,
    ) -> dict[str, Any]:
        """`api_token`: the replicas' key (the driver makes one per run) for the trainer's HTTP calls."""

        # peft and transformers (seconds) load in the trainer's process, not in the driver that places it
        from trainer.grpo.trainer import GrpoTrainer

        self.replicas = replicas
        self.grpo = GrpoTrainer(
            config,
            Path(run_dir),
            RolloutDispatcher(replicas.urls(), token=api_token),
            RayAdapterPublisher(replicas.handles),
            RewardClient.for_router(router),
            recover_replicas=self._recover_replicas,
        )
        self.grpo.setup(resume=resume)
        return {"step": self.grpo.step_count, "max_steps": config.max_steps}

    def grpo_step(self) -> dict[str, Any]:
        metrics = self.grpo.step()
        metrics["events"], self.events = self.events, []
        return metrics

    def recover_replicas(self) -> list[str]:
        """For the driver when a replica stopped answering outside a step: wait for Ray's restart,
        reload the current version there, and return what happened (the URLs are then current)."""
        self._recover_replicas(self.grpo.step_count)
        events, self.events = self.events, []
        return events

    def _recover_replicas(self, version: int) -> None:
        """Restart what Ray restarted (a new engine and port), reload `version` where it is missing."""
        urls = self.replicas.urls()
        moved = self.grpo.rollouts.reconnect(urls)
        name = self.grpo.config.adapter_name
        update = None
        for index, replica in enumerate(self.replicas.handles):
            served = {
                (info.name, info.version)
                for info in get_through_restarts(replica.adapters.remote, "listing adapters")
            }
            if (name, version) not in served:
                update = update or ray.put(self.grpo.current_update())
                get_through_restarts(
                    lambda r=replica, u=update: r.load_adapter.remote(u), "reloading an adapter"
                )
                self.events.append(
                    f"rollout replica {index} restarted at {urls[index]}; reloaded {name} v{version}"
                )
            elif index in moved:
                self.events.append(
                    f"rollout replica {index} restarted at {urls[index]}; it already serves v{version}"
                )
            else:
                continue
            log.warning(self.events[-1])

    def history(self) -> list[dict[str, Any]]:
        return list(self.grpo.history) if self.grpo else []
