"""Typed configuration of a GRPO run; the defaults are the paper's recipe where it states one."""

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from shared.config import StrictModel
from trainer.grpo.loss import GrpoLossSettings
from trainer.lora import LoraSettings


class SamplingSettingsGrpo(StrictModel):
    group_size: int = Field(4, ge=2, description="G: completions per X-ray")
    temperature: float = Field(0.8, gt=0.0, description="sampling temperature of the rollouts")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="nucleus sampling of the rollouts")
    max_tokens: int = Field(512, ge=1, description="longest completion, in tokens")


class OptimSettings(StrictModel):
    lr: float = Field(1e-5, gt=0.0, description="AdamW learning rate of the policy LoRA")
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay")
    grad_clip: float = Field(1.0, gt=0.0, description="gradient norm clip")
    warmup_steps: int = Field(0, ge=0, description="GRPO steps over which the rate rises linearly to lr")
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="the rate after warm-up: constant, or a cosine decay to 0 at max_steps"
    )


class RewardSettings(StrictModel):
    spec: str = Field("hard", description="hard | nuanced | package.module:Class | http(s)://reward-service")
    config: dict[str, Any] = Field({}, description="the reward's own options (see `cxr-rl reward --help`)")


class GrpoSettings(StrictModel):
    """The GRPO options of a run config; the run fills in the model, the RL manifest and the reward
    (see GrpoConfig). Defaults are the paper's recipe where it states one."""

    sft_adapter: str | None = Field(
        None, description="the SFT checkpoint: initial policy and KL reference (a run fills it in)"
    )
    prompt_format: str = Field("reasoning_a", description="the prompt the rollouts are sampled with")
    lora: LoraSettings = Field(
        LoraSettings(dropout=0.0),
        description="the policy's LoRA; no dropout in GRPO: dropout would make the first update's ratio "
        "differ from 1 and the trainer's logprobs differ from the server's",
    )
    loss: GrpoLossSettings = Field(
        GrpoLossSettings(), description="the GRPO objective (trainer/grpo/loss.py)"
    )
    sampling: SamplingSettingsGrpo = Field(SamplingSettingsGrpo(), description="how rollouts are sampled")
    optim: OptimSettings = Field(OptimSettings(), description="the optimizer of the policy LoRA")
    batch_size: int = Field(8, ge=1, description="X-rays per step (each sampled group_size times)")
    max_steps: int = Field(125, ge=1, description="GRPO steps (1,000 RL samples / 8 per step = one epoch)")
    updates_per_batch: int = Field(1, ge=1, description="mu: optimizer updates per sampled batch")
    max_staleness: Literal[0, 1] = Field(
        0,
        description="0: each step samples with the policy it trains (on-policy, one phase after the other). "
        "1: the next step's rollouts are sampled by the last published version while this step trains "
        "(one step off-policy): the importance ratio then takes the sampling version's logprobs, and the clip "
        "bounds it (trainer/grpo/batches.py, trainer/grpo/behaviour.py). Default 0, by measurement: on 2 shared "
        "CPU cores sampling behind training competes with it, and the overlapped step took 1.14x the on-policy "
        "one at 1 torch thread beside TRL, 0.81x in a quieter run (README: A faster GRPO step); it is for a "
        "replica with cores or a device of its own",
    )
    seed: int = Field(0, description="seeds torch, the order X-rays are drawn in, and the rollouts")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto: bf16 on GPU, float32 on CPU"
    )
    gradient_checkpointing: bool = Field(True, description="recompute activations in backward to save memory")
    min_pixels: int | None = Field(
        None,
        description="Qwen-VL image token budget; must equal the rollout server's, or the token ids differ",
    )
    max_pixels: int | None = Field(None, description="Qwen-VL: see min_pixels")
    image_attention: Literal["auto", "bidirectional", "causal"] = Field(
        "auto",
        description="how image tokens attend when the trainer recomputes logprobs; auto follows the rollout "
        "server (GET /v1/info), so the importance ratios compare the policy with itself",
    )
    checkpoint_every: int = Field(1, ge=1, description="save a resumable checkpoint every N steps")
    keep_checkpoints: int = Field(
        3, ge=1, description="the newest N checkpoints are kept, older ones removed"
    )
    adapter_name: str = Field("policy", description="the name adapter versions are published under")
    agreement_warn: float = Field(
        0.05, gt=0.0, description="warn when |server - trainer| logprobs differ by more than this"
    )


class GrpoConfig(GrpoSettings):
    """A whole GRPO run (`cxr-rl grpo --config`): the settings plus what a run config fills in."""

    model: str = Field(description="base model folder (hub layout)")
    rl_manifest: str = Field(description="JSONL of X-rays with ground-truth labels")
    reward: RewardSettings = Field(RewardSettings(), description="the reward the rollouts are scored by")
    prompt_formats_file: Path | None = Field(
        None, description="user prompt formats (YAML or JSON); the rollout server must load the same file"
    )
