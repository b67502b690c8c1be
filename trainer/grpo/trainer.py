"""The GRPO loop: rollouts from the server (version k), rewards from the reward worker, the clipped
token-level objective with a KL term to the SFT reference, then LoRA-only sync (version k+1).

The reference policy needs no second model copy: the SFT adapter is loaded twice into one
PeftModel, once as the trainable "policy" and once frozen as "reference"; reference passes switch
adapters (or disable the adapter when GRPO starts from the base model).
"""

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from rewards.client import RewardClient
from shared.chat import render_prompt
from shared.images import decode_xray
from shared.manifest import read_manifest
from shared.prompts import registry_with, user_messages
from shared.schemas import AdapterUpdate, RewardItem, RolloutResult
from trainer.canary import CanaryProbe
from trainer.checkpoint import latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from trainer.grpo.batches import SampledBatch, StepBatches
from trainer.grpo.behaviour import BehaviourCopy, behaviour_logprobs
from trainer.grpo.config import GrpoConfig
from trainer.grpo.data import RlSampler
from trainer.grpo.loss import group_advantages, grpo_token_loss, loss_temperature, token_weights
from trainer.grpo.stats import StepStats
from trainer.logprobs import (
    completion_batch,
    image_encoding,
    move,
    policy_logprobs,
    prompt_inputs,
    vision_is_frozen,
)
from trainer.lora import adapter_update
from trainer.model import load_policy, resolve_device, resolve_dtype
from trainer.rollouts import RolloutDispatcher, rollout_item
from trainer.sync import AdapterPublisher

log = logging.getLogger("cxr_rl.grpo")
POLICY, REFERENCE = "policy", "reference"


class InputMismatchError(RuntimeError):
    """The trainer's processor and the rollout server tokenised one X-ray and prompt differently."""


def disable_dropout(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


class GrpoTrainer:
    def __init__(
        self,
        config: GrpoConfig,
        run_dir: Path,
        rollouts: RolloutDispatcher,
        publisher: AdapterPublisher,
        rewards: RewardClient,
        recover_replicas: Callable[[int], None] | None = None,
    ):
        self.config, self.run_dir = config, Path(run_dir)
        self.rollouts, self.publisher, self.rewards = rollouts, publisher, rewards
        self.recover_replicas = recover_replicas
        self.step_count = 0  # optimizer steps done; version `step_count` is live on the servers
        self.history: list[dict[str, Any]] = []
        # What setup() builds: it loads the model, so a GrpoTrainer is cheap until then.
        self.device: torch.device | None = None
        self.dtype: torch.dtype | None = None
        self.model: Any = None  # the PeftModel: "policy" trains, "reference" (the SFT adapter) is frozen
        self.processor: Any = None
        self.has_reference_adapter = False
        self.canary: CanaryProbe | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.manifest_dir: Path | None = None
        self.sampler: RlSampler | None = None
        self.batches: StepBatches | None = None
        self.prompt_text = ""
        self.pad_id = 0
        self.causal_images = False  # image tokens attend causally, as the rollout server's do
        self.vision_frozen = False  # then one X-ray encoding serves every pass of a step
        self.behaviour: BehaviourCopy | None = None
        self.last_publish_bytes = 0

    # ------------------------------------------------------------------------------------------
    # Set-up and resume
    # ------------------------------------------------------------------------------------------
    def setup(self, resume: bool = False) -> None:
        config = self.config
        torch.manual_seed(config.seed)
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.model, self.processor = load_policy(
            config.model, config.lora, device=self.device, dtype=self.dtype,
            gradient_checkpointing=config.gradient_checkpointing, adapter_path=config.sft_adapter,
            adapter_name=POLICY, trainable=True, min_pixels=config.min_pixels, max_pixels=config.max_pixels,
        )  # fmt: skip
        self.has_reference_adapter = config.sft_adapter is not None
        if self.has_reference_adapter:
            self.model.load_adapter(config.sft_adapter, adapter_name=REFERENCE, is_trainable=False)
            self.model.set_adapter(POLICY)
        disable_dropout(self.model)
        self.canary = CanaryProbe(self.model, self.processor, config.model, POLICY, self.dtype)
        trainable = [(name, p) for name, p in self.model.named_parameters() if p.requires_grad]
        assert trainable and all(f".{POLICY}." in name for name, _ in trainable), (
            "only the policy LoRA trains"
        )
        self.optimizer = torch.optim.AdamW(
            [p for _, p in trainable], lr=config.optim.lr, weight_decay=config.optim.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        manifest = Path(config.rl_manifest)
        self.manifest_dir = manifest.parent
        self.sampler = RlSampler(read_manifest(manifest), config.batch_size, config.seed)
        self.batches = StepBatches(
            config, self.sampler, self.manifest_dir, lambda: self.rollouts, lambda: self.recover_replicas
        )
        self.prompt_text = render_prompt(
            self.processor, user_messages(registry_with(config.prompt_formats_file).get(config.prompt_format))
        )
        self.pad_id = self.processor.tokenizer.pad_token_id or 0

        checkpoint = latest_checkpoint(self.run_dir) if resume else None
        if checkpoint is not None:
            state = load_checkpoint(
                checkpoint,
                model=self.model,
                adapter_name=POLICY,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
            )
            self.step_count = state["step"]
            self.sampler.load_state_dict(state["sampler"])
            self.rewards.load_state_dict(state["reward_state"])
            self.history = state.get("history", [])
            log.info("resumed from %s (step %d)", checkpoint.name, self.step_count)
        self.causal_images = self._image_attention() == "causal"
        self.vision_frozen = vision_is_frozen(self.model)  # then one X-ray encoding serves every pass
        self.behaviour = BehaviourCopy(self.model, POLICY)  # max_staleness 1: the last version's LoRA
        # A resumed run re-publishes its checkpoint's version; drop whatever a crashed run left.
        self.publisher.forget(config.adapter_name)
        self.publish()
        self.check_same_inputs()

    def _image_attention(self) -> str:
        modes = {client.info().image_attention for client in self.rollouts.clients}
        if len(modes) != 1:
            raise RuntimeError(
                f"rollout replicas disagree on image attention ({sorted(modes)}): mixed backends"
            )
        served = modes.pop()
        wanted = self.config.image_attention
        if wanted != "auto" and wanted != served:
            log.warning(
                "image_attention=%s while the rollout server attends %s: expect logprob mismatch",
                wanted,
                served,
            )
            return wanted
        return served

    def _lr_factor(self, step: int) -> float:
        """The rate of GRPO step `step + 1` (0-based `step`), for all its mu updates: the schedule
        advances once per GRPO step, so warm-up and the cosine horizon count GRPO steps."""
        optim = self.config.optim
        if step < optim.warmup_steps:
            return (step + 1) / (optim.warmup_steps + 1)
        if optim.schedule == "constant":
            return 1.0
        progress = (step - optim.warmup_steps) / max(1, self.config.max_steps - optim.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    def current_update(self) -> AdapterUpdate:
        """The policy LoRA as version `step_count`, with what the server's canary must read
        (trainer.canary: tokens picked because their logprobs moved most since the last version)."""
        update = adapter_update(self.model, POLICY, self.config.adapter_name, self.step_count)
        update.canary = self.canary.check(self.step_count)
        return update

    def publish(self) -> float:
        """Publish version `step_count` to every replica; seconds from serialising to live."""
        started = time.perf_counter()
        update = self.current_update()
        result = self.publisher.publish(update)
        if result.version != self.step_count:
            raise RuntimeError(f"published version {self.step_count} but replicas report {result.version}")
        self.last_publish_bytes = result.bytes
        return time.perf_counter() - started

    def check_same_inputs(self) -> None:
        """One short rollout at start-up: the server's prompt token ids must equal ours."""
        record = self.sampler.records[0]
        item = rollout_item(record, self.manifest_dir, self.config.prompt_format)
        result = self.batches.sample(
            [item],
            n=1,
            max_tokens=1,
            seed=self.config.seed,
            version=self.step_count,
            step=self.step_count + 1,
        )[0]
        self._prompt_inputs(record.image_path(self.manifest_dir).read_bytes(), result)

    # ------------------------------------------------------------------------------------------
    # One step
    # ------------------------------------------------------------------------------------------
    def _prompt_inputs(self, image_bytes: bytes, result: RolloutResult) -> dict[str, torch.Tensor]:
        inputs = prompt_inputs(self.processor, self.prompt_text, decode_xray(image_bytes))
        ours = inputs["input_ids"][0].tolist()
        if ours != result.prompt_token_ids:
            first = next(
                (i for i, (a, b) in enumerate(zip(ours, result.prompt_token_ids, strict=False)) if a != b),
                min(len(ours), len(result.prompt_token_ids)),
            )
            raise InputMismatchError(
                f"trainer and rollout server tokenise X-ray {result.item_id!r} differently: {len(ours)} vs "
                f"{len(result.prompt_token_ids)} prompt tokens, first difference at position {first}; check "
                "that both load the same processor files"
            )
        return inputs

    @contextlib.contextmanager
    def _reference(self) -> Iterator[None]:
        if self.has_reference_adapter:
            self.model.set_adapter(REFERENCE)
            try:
                yield
            finally:
                self.model.set_adapter(POLICY)  # also makes the policy LoRA trainable again
        else:
            with self.model.disable_adapter():
                yield

    def step(self, prefetch_next: bool | None = None) -> dict[str, Any]:
        """One GRPO step. With `max_staleness: 1` it first sets the next step's rollouts going, by the
        version live now, unless `prefetch_next` is False (default: unless this is the last step)."""
        config, sampling = self.config, self.config.sampling
        stats = StepStats(step=self.step_count + 1)
        started = time.perf_counter()
        batch = self.batches.next_batch(self.step_count)  # its staleness checked against the setting
        stats.time("rollout_s", started)  # with overlap: the wait for rollouts sampled meanwhile
        # The version the server says sampled it, and how many versions behind the policy it trains.
        stats.values.update(
            policy_version=batch.version,
            staleness=self.step_count - batch.version,
            rollout_sample_s=batch.sample_s,
        )
        if prefetch_next is None:
            prefetch_next = self.step_count + 1 < config.max_steps
        if config.max_staleness and prefetch_next:
            self.batches.start_next(self.step_count)  # sampled by this version while it trains
        records, results = batch.drawn.records, batch.results

        started = time.perf_counter()
        reward_items = [
            RewardItem(
                text=c.text,
                n_tokens=len(c.token_ids),
                labels=record.labels,
                masked=record.metadata.get("masked", []),  # `drop` policy: uncertain labels count nowhere
                metadata={"image_id": record.id},
            )
            for record, result in zip(records, results, strict=True)
            for c in result.completions
        ]
        reward = self.rewards.score(f"step-{self.step_count + 1}", reward_items)
        stats.time("reward_s", started)
        stats.add_rewards(
            reward, [len(c.token_ids) for result in results for c in result.completions], sampling.group_size
        )

        started = time.perf_counter()
        scaled = torch.tensor(reward.totals, dtype=torch.float32) * reward.scale  # its declared scale
        self._train(batch, scaled, stats)
        stats.time("train_s", started)

        self.step_count += 1
        stats.values["sync_s"] = self.publish()
        stats.values["published_version"] = self.step_count
        stats.values["sync_bytes"] = self.last_publish_bytes
        started = time.perf_counter()
        if self.step_count % config.checkpoint_every == 0 or self.step_count == config.max_steps:
            self.save()
        stats.time("checkpoint_s", started)
        metrics = stats.finish(agreement_warn=config.agreement_warn)
        if metrics.get("logprob_diff_max", 0.0) > config.agreement_warn:
            log.warning(
                "step %d: server and trainer logprobs differ by up to %.3g (mean %.3g): importance ratios are off",
                metrics["step"], metrics["logprob_diff_max"], metrics["logprob_diff_mean"],
            )  # fmt: skip
        self.history.append({k: v for k, v in metrics.items() if not k.startswith("label_f1/")})
        return metrics

    def _train(self, batch: SampledBatch, rewards: torch.Tensor, stats: StepStats) -> None:
        """The step's mu optimizer updates on one sampled batch, all at one learning rate; the
        schedule then advances once (it counts GRPO steps, its horizon `max_steps`)."""
        config = self.config
        # The distribution the ratio and the KL are taken under (see trainer.grpo.loss, "Temperature").
        temperature = loss_temperature(config.loss, config.sampling.temperature)
        advantages = group_advantages(rewards, config.sampling.group_size, config.loss.scale_rewards)
        total_completions = len(rewards)
        total_tokens = sum(len(c.token_ids) for result in batch.results for c in result.completions)
        groups = []
        for image, result in zip(batch.drawn.images, batch.results, strict=True):
            inputs = self._prompt_inputs(image, result)
            completions = [c.token_ids for c in result.completions]
            group = move(
                completion_batch(inputs, completions, self.pad_id, self.causal_images),
                self.device,
                self.dtype,
            )
            with torch.no_grad():  # one encoding of the X-ray for every pass of the step
                encoded = image_encoding(self.model, group) if self.vision_frozen else None
            groups.append((group, encoded, result))
        self.model.train()
        ref_logprobs: list[torch.Tensor | None] = [None] * len(groups)
        if config.loss.beta > 0:
            with torch.no_grad(), self._reference():
                for index, (group, encoded, _) in enumerate(groups):
                    ref_logprobs[index] = policy_logprobs(
                        self.model, group, temperature, image=encoded
                    ).logprobs
        stale = batch.version != self.step_count
        # The behaviour policy's logprobs (the version that sampled) and, where the trainer computes
        # them, its raw logprobs to compare with the server's; None: taken from the first update.
        old_logprobs: list[torch.Tensor | None] = [None] * len(groups)
        compared: list[torch.Tensor | None] = [None] * len(groups)
        if stale:  # see trainer/grpo/behaviour.py for where these come from in each loss mode
            old_logprobs, compared = behaviour_logprobs(
                config.loss.logprobs, self.behaviour, batch.version, groups, temperature
            )
        elif config.updates_per_batch > 1:  # mu > 1: the behaviour policy's logprobs, before any update
            with torch.no_grad():
                for index, (group, encoded, _) in enumerate(groups):
                    old_logprobs[index] = policy_logprobs(
                        self.model, group, temperature, image=encoded
                    ).logprobs
        if config.max_staleness and config.loss.logprobs == "tempered":
            self.behaviour.keep(self.step_count)  # it samples the next batch while these updates run
        lr = self.scheduler.get_last_lr()[0]  # the rate of every update of this step
        grad_norms = []
        for update in range(config.updates_per_batch):
            self.optimizer.zero_grad(set_to_none=True)
            for index, (group, encoded, result) in enumerate(groups):
                first = update == 0
                current = policy_logprobs(
                    self.model,
                    group,
                    temperature,
                    with_entropy=first,
                    with_raw=first and not stale,
                    image=encoded,
                )
                if old_logprobs[index] is None:
                    old_logprobs[index] = current.logprobs.detach()
                mask = group.completion_mask
                group_slice = slice(
                    index * config.sampling.group_size, (index + 1) * config.sampling.group_size
                )
                weights = token_weights(
                    mask, config.loss, total_completions, config.sampling.max_tokens, total_tokens
                )
                loss, loss_stats = grpo_token_loss(
                    current.logprobs, old_logprobs[index], ref_logprobs[index],
                    advantages[group_slice].to(self.device), mask, weights, config.loss,
                )  # fmt: skip
                loss.backward()
                if first:  # the server's raw logprobs against ours of the same version: like with like
                    ours = compared[index] if stale else current.raw
                    stats.add_group(loss.item(), loss_stats, current.entropy, mask, ours, result)
            grad_norms.append(
                torch.nn.utils.clip_grad_norm_(
                    [p for p in self.model.parameters() if p.requires_grad], config.optim.grad_clip
                ).item()
            )
            self.optimizer.step()
        self.scheduler.step()
        stats.add_updates(lr, grad_norms)
        self.model.eval()

    # ------------------------------------------------------------------------------------------
    # Checkpoints and the loop
    # ------------------------------------------------------------------------------------------
    def save(self) -> Path:
        state = {
            "step": self.step_count,
            "sampler": self.batches.sampler_state(),  # X-rays in flight are drawn again after a resume
            "reward_state": self.rewards.state_dict(),
            "history": self.history,
            "config": self.config.model_dump(mode="json"),
        }
        folder = save_checkpoint(
            self.run_dir, self.step_count, model=self.model, adapter_name=POLICY,
            optimizer=self.optimizer, scheduler=self.scheduler, state=state,
        )  # fmt: skip
        prune_checkpoints(self.run_dir, self.config.keep_checkpoints)
        return folder

    def train(
        self, on_step: Callable[[dict[str, Any]], None] | None = None, stop_after: int | None = None
    ) -> None:
        last = self.config.max_steps if stop_after is None else min(self.config.max_steps, stop_after)
        while self.step_count < last:
            metrics = self.step(prefetch_next=self.step_count + 1 < last)
            if on_step is not None:
                on_step(metrics)
        self.batches.prefetch.discard()
