"""Typed configuration of one SFT run; the defaults are the paper's recipe."""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trainer.lora import LoraSettings

PIXELS_PER_QWEN_TOKEN = 28 * 28  # Qwen-VL: 14 px patches merged 2x2 into one visual token


class SftData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train_manifest: Path  # JSONL of ManifestRecord with `target` filled in
    # Without a validation manifest, `val_fraction` of the training patients is held out (seeded).
    val_manifest: Path | None = None
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    split_seed: int = Field(0, ge=0)
    sft_format: str  # one of SFT_OUTPUT_FORMATS, or a format from `prompt_formats_file`
    prompt_formats_file: Path | None = None
    loader_workers: int = Field(0, ge=0)  # DataLoader worker processes decoding X-rays


class SftTraining(BaseModel):
    model_config = ConfigDict(extra="forbid")

    learning_rate: float = Field(5e-5, ge=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0)
    max_grad_norm: float = Field(5.0, gt=0.0)
    per_device_batch_size: int = Field(1, ge=1)
    gradient_accumulation_steps: int = Field(8, ge=1)  # effective batch 8 with batch 1
    epochs: int = Field(6, ge=1)
    early_stopping_patience: int = Field(2, ge=1)  # epochs without a lower validation loss
    max_steps: int | None = Field(None, ge=1)  # cap on optimizer steps (smoke tests)
    seed: int = Field(0, ge=0)


class SftConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Path  # base model folder (hub layout: config, weights, processor)
    out: Path | None = None  # output folder; `cxr-rl sft --out` overrides it
    data: SftData
    lora: LoraSettings = LoraSettings()
    training: SftTraining = SftTraining()
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bfloat16 on GPU, float32 on CPU
    gradient_checkpointing: bool = True
    # Image token budget (the paper: 256 to 512). Qwen-VL only; Gemma3 resizes to a fixed size.
    # Use the same bounds as the rollout server, or the trained adapter sees other token counts.
    min_pixels: int | None = Field(256 * PIXELS_PER_QWEN_TOKEN, ge=PIXELS_PER_QWEN_TOKEN)
    max_pixels: int | None = Field(512 * PIXELS_PER_QWEN_TOKEN, ge=PIXELS_PER_QWEN_TOKEN)
    progress: bool = True  # tqdm bar with the running loss

    @model_validator(mode="after")
    def _pixel_bounds_in_order(self) -> "SftConfig":
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) is above max_pixels ({self.max_pixels})")
        return self
