"""Typed configuration of a GRPO run; the defaults are the paper's recipe where it states one."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trainer.grpo_loss import GrpoLossSettings
from trainer.lora import LoraSettings


class SamplingSettingsGrpo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group_size: int = Field(4, ge=2)  # G completions per X-ray
    temperature: float = Field(0.8, gt=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=1)


class OptimSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lr: float = Field(1e-5, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    grad_clip: float = Field(1.0, gt=0.0)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"


class RewardSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: str = "hard"  # hard | nuanced | package.module:Class | http(s)://reward-service
    config: dict[str, Any] = {}


class GrpoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str  # base model folder (hub layout)
    sft_adapter: str | None = None  # the SFT checkpoint: initial policy and KL reference
    rl_manifest: str  # JSONL of X-rays with ground-truth labels
    prompt_format: str = "reasoning_a"
    # No LoRA dropout in GRPO: dropout would make the first update's ratio differ from 1 and the
    # trainer's logprobs differ from the server's.
    lora: LoraSettings = LoraSettings(dropout=0.0)
    loss: GrpoLossSettings = GrpoLossSettings()
    sampling: SamplingSettingsGrpo = SamplingSettingsGrpo()
    optim: OptimSettings = OptimSettings()
    reward: RewardSettings = RewardSettings()
    batch_size: int = Field(8, ge=1)  # X-rays per step (each sampled group_size times)
    max_steps: int = Field(125, ge=1)  # 1,000 RL samples / 8 per step = one epoch
    updates_per_batch: int = Field(1, ge=1)  # mu
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 on GPU, float32 on CPU
    gradient_checkpointing: bool = True
    # Image token budget (Qwen-VL); must equal the rollout server's, or the token ids differ.
    min_pixels: int | None = None
    max_pixels: int | None = None
    # How image tokens attend when the trainer recomputes logprobs: "auto" follows the rollout
    # server (see shared.schemas.ServerInfo.image_attention), so the importance ratios compare the
    # policy with itself.
    image_attention: Literal["auto", "bidirectional", "causal"] = "auto"
    checkpoint_every: int = Field(1, ge=1)
    keep_checkpoints: int = Field(3, ge=1)
    adapter_name: str = "policy"  # the name versions are published under
    agreement_warn: float = Field(0.05, gt=0.0)  # warn when |server - trainer| logprob max exceeds this
