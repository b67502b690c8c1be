"""Placing the run's actors on a Ray cluster and taking them down again.

On one GPU the rollout replica and the trainer share it by memory partitioning, with every number
derived from the run config's `gpu:` section (deploy/memory/split.py, `cxr-rl plan-memory`): Ray's
fractional `num_gpus`, vLLM's `gpu_memory_utilization`, and the trainer's cap on the rest. Actors go
wherever their resources are (`resources:` steers them to nodes that declare custom resources); each
is awaited until placed, at most `placement_timeout_s`. The trainer writes into the run folder the
driver reads, so off the driver's node it must see that folder (a shared filesystem): checked here.
"""

import contextlib
import logging
import secrets
from pathlib import Path
from typing import Any

import ray

from deploy.config import RunConfig
from deploy.interrupts import keep_sigterm_handler
from deploy.local_cluster import remove_private_cluster_files, start_private_cluster
from deploy.memory.wait import ShareWait, ShareWaitingReplica
from deploy.placement_checks import (
    PlacedActor,
    resource_ask,
    run_dir_probe,
    unshared_run_dir_message,
    wait_until_placed,
)
from rewards.router import ROUTER_NAME, start_router
from rollout_server.config import ServerConfig
from shared.errors import UserError
from shared.ray_calls import connect_to_cluster, get_through_restarts
from shared.replicas import RolloutReplicas
from trainer.actor import TrainerActor

log = logging.getLogger("cxr_rl.driver")


class Placement:
    def __init__(self, config: RunConfig, model: Path):
        self.config, self.model = config, model
        self.replicas: list[Any] = []
        self.router: Any = None
        self.trainer: Any = None
        self.nodes: dict[str, str] = {}  # where each actor landed: "driver", "trainer", "rollout-0", ...
        self.private_cluster: Path | None = None  # the folder of a cluster this run started (--address local)
        # This run's key: its replicas refuse adapter changes (and answer nothing) without it, so a
        # replica listening on the network is not open to it. Only the trainer and evaluator get it.
        self.api_token = secrets.token_urlsafe(32)

    @classmethod
    def connect(cls, config: RunConfig, model: Path, address: str) -> "Placement":
        private_cluster = None
        try:
            # SIGTERM stops the run as Ctrl-C does (deploy/interrupts.py), not as ray.init() would.
            with keep_sigterm_handler():
                if address == "local":
                    private_cluster = start_private_cluster(config.namespace)
                else:
                    connect_to_cluster(address, config.namespace, log_to_driver=False)
        except ConnectionError as error:
            raise UserError(
                f"no Ray cluster at {address!r} ({error}); start one with `ray start --head`, "
                "or pass --address local to start one inside this process"
            ) from None
        log.info("connected to Ray: %s", ray.cluster_resources())
        placement = cls(config, model)
        placement.private_cluster = private_cluster
        return placement

    def __enter__(self) -> "Placement":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # ------------------------------------------------------------------------------------------
    def start_replicas(self) -> None:
        rollout = self.config.rollout
        server_config = ServerConfig(
            engine=self.config.engine_config(str(self.model)),
            host=rollout.host,
            port=0,
            prompt_formats_file=self.config.data.prompt_formats_file,
            api_token=self.api_token,
        )
        split = self.config.gpu_split()
        num_gpus = split.rollout_num_gpus if split else 0.0
        wait = ShareWait(split.vllm_memory_utilization, split.wait_for_share_s) if split else None
        placed = []
        for index in range(rollout.replicas):
            actor = (
                ray.remote(ShareWaitingReplica)
                .options(
                    name=f"{self.config.name}-rollout-{index}",
                    num_cpus=rollout.placement.num_cpus,
                    num_gpus=num_gpus,
                    resources=rollout.placement.resources,
                    max_restarts=rollout.max_restarts,
                    max_concurrency=64,
                )
                .remote(server_config, wait)
            )
            self.replicas.append(actor)
            asks = resource_ask(rollout.placement.num_cpus, num_gpus, rollout.placement.resources)
            placed.append(PlacedActor(actor, f"rollout replica {index}", asks))
        answers = wait_until_placed(placed, self.config.placement_timeout_s)
        for index, (actor, answer) in enumerate(zip(self.replicas, answers, strict=True)):
            self.nodes[f"rollout-{index}"] = answer["node_id"]
            actor.start.remote()  # engines load in the background (SFT runs meanwhile)

    def rollout_replicas(self) -> RolloutReplicas:
        return RolloutReplicas(self.replicas)

    def replica_urls(self) -> list[str]:
        return self.rollout_replicas().urls()

    def start_reward_router(self) -> None:
        try:  # a router left behind by a crashed driver in this namespace
            ray.kill(ray.get_actor(ROUTER_NAME, namespace=self.config.namespace))
            log.warning("removed a stale reward router from namespace %s", self.config.namespace)
        except ValueError:
            pass
        reward = self.config.reward
        self.router = start_router(reward.spec, reward.config, namespace=self.config.namespace)

    def reward_worker_identity(self) -> str:
        target = ray.get(self.router.current.remote())
        if target.actor is None:
            return f"{target.spec} (HTTP, generation {target.generation})"
        info = get_through_restarts(target.actor.describe.remote, "asking the reward worker")
        return f"{info.get('name')} {info.get('version')} (generation {target.generation}, pid {info.get('pid', '?')})"

    def start_trainer(self) -> None:
        placement, split = self.config.trainer, self.config.gpu_split()
        num_gpus = split.trainer_num_gpus if split else 0.0
        cap = (split.trainer_memory_fraction, split.gpu_gib) if split else (None, None)
        self.trainer = (
            ray.remote(TrainerActor)
            .options(num_cpus=placement.num_cpus, num_gpus=num_gpus, resources=placement.resources)
            .remote(*cap)
        )
        here = ray.get_runtime_context().get_node_id()
        self.nodes["driver"] = here
        probe = run_dir_probe(self.config.run_dir)
        try:
            asks = resource_ask(placement.num_cpus, num_gpus, placement.resources)
            (answer,) = wait_until_placed(
                [PlacedActor(self.trainer, "the trainer", asks)], self.config.placement_timeout_s, str(probe)
            )
        finally:
            probe.unlink(missing_ok=True)
        self.nodes["trainer"] = answer["node_id"]
        if not answer["sees_probe"]:
            raise UserError(unshared_run_dir_message(self.config.run_dir, answer["node_id"], here))

    def shutdown(self) -> None:
        """Stop every actor this run placed (engine processes included), then disconnect."""
        if not ray.is_initialized():
            return
        stops = []
        for replica in self.replicas:
            with contextlib.suppress(Exception):  # already dead
                stops.append(replica.stop.remote())
        try:
            ray.wait(stops, num_returns=len(stops), timeout=60)
        except Exception as error:  # noqa: BLE001 - shutting down regardless
            log.warning("stopping rollout replicas: %s", error)
        actors = [*self.replicas, self.trainer, self.router]
        if self.router is not None:
            with contextlib.suppress(Exception):  # the router may be gone already
                actors.append(ray.get(self.router.current.remote(), timeout=10).actor)
        for actor in actors:
            if actor is not None:
                with contextlib.suppress(Exception):  # already gone
                    ray.kill(actor, no_restart=True)
        ray.shutdown()  # a private cluster (--address local) stops with it
        if self.private_cluster is not None:
            remove_private_cluster_files(self.private_cluster)
        log.info("actors stopped, disconnected from Ray")
