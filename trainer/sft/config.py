"""Typed configuration of one SFT run; the defaults are the paper's recipe."""

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from shared.config import StrictModel
from trainer.lora import LoraSettings

FULL_WEIGHTS_FILE = "full_weights.safetensors"  # what `train_in_full` trained, beside the adapter
PIXELS_PER_QWEN_TOKEN = 28 * 28  # Qwen-VL: 14 px patches merged 2x2 into one visual token


class SftDataSettings(StrictModel):
    """How SFT reads its data, as a run config sets it; the run fills in the manifest and format."""

    val_manifest: Path | None = Field(
        None,
        description="validation manifest; without one, val_fraction of the training patients is held out",
    )
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="held-out share of patients (seeded)")
    split_seed: int = Field(0, ge=0, description="seed of the held-out patients (without val_manifest)")
    prompt_formats_file: Path | None = Field(None, description="extra prompt formats (name: instruction)")
    loader_workers: int = Field(0, ge=0, description="DataLoader worker processes decoding X-rays")


class SftData(SftDataSettings):
    train_manifest: Path = Field(description="JSONL of ManifestRecord with `target` filled in")
    sft_format: str = Field(description="one of SFT_OUTPUT_FORMATS, or a format from prompt_formats_file")


class SftTraining(StrictModel):
    learning_rate: float = Field(
        5e-5, ge=0.0, description="AdamW peak learning rate (cosine schedule after warm-up)"
    )
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay")
    warmup_ratio: float = Field(
        0.05, ge=0.0, lt=1.0, description="share of the optimizer steps spent warming up"
    )
    max_grad_norm: float = Field(5.0, gt=0.0, description="gradient norm clip")
    per_device_batch_size: int = Field(1, ge=1, description="examples per forward pass")
    gradient_accumulation_steps: int = Field(
        8, ge=1, description="optimizer step every N batches (the paper: 8, with batch 1)"
    )
    epochs: int = Field(
        6, ge=1, description="most passes over the training set (early stopping may end sooner)"
    )
    early_stopping_patience: int = Field(2, ge=1, description="epochs without a lower validation loss")
    max_steps: int | None = Field(None, ge=1, description="cap on optimizer steps (smoke tests)")
    label_balance: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="repeat each training image (commonest label's count / its rarest label's count) ** "
        "label_balance times, at most max_label_repeats: 0 (the default) trains on the images as drawn, 0.5 "
        "is square-root balancing; validation images are never repeated",
    )
    max_label_repeats: int = Field(4, ge=1, description="most times label_balance repeats one image")
    seed: int = Field(0, ge=0, description="seeds torch and the order of the examples")


class SftSettings(StrictModel):
    """The SFT options of a run config (the paper's recipe as defaults); see SftConfig."""

    data: SftDataSettings = Field(SftDataSettings(), description="the validation split and data loading")
    lora: LoraSettings = Field(LoraSettings(), description="the adapter SFT trains")
    training: SftTraining = Field(SftTraining(), description="optimizer, schedule and stopping")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when there is a GPU")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto: bfloat16 on GPU, float32 on CPU"
    )
    gradient_checkpointing: bool = Field(True, description="recompute activations in backward to save memory")
    min_pixels: int | None = Field(
        256 * PIXELS_PER_QWEN_TOKEN,
        ge=PIXELS_PER_QWEN_TOKEN,
        description="Qwen-VL image token budget (the paper: 256 to 512 tokens); use the rollout server's "
        "bounds, or the trained adapter sees other token counts. Gemma3 resizes to a fixed size",
    )
    max_pixels: int | None = Field(
        512 * PIXELS_PER_QWEN_TOKEN, ge=PIXELS_PER_QWEN_TOKEN, description="Qwen-VL: see min_pixels"
    )
    progress: bool = Field(True, description="tqdm bar with the running loss")

    @model_validator(mode="after")
    def _pixel_bounds_in_order(self) -> "SftSettings":
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) is above max_pixels ({self.max_pixels})")
        return self


class SftConfig(SftSettings):
    """A whole SFT run (`cxr-rl sft --config`): the settings plus what a run config fills in."""

    model: Path = Field(description="base model folder (hub layout: config, weights, processor)")
    out: Path | None = Field(None, description="output folder; `cxr-rl sft --out` overrides it")
    data: SftData = Field(description="the training manifest and output format, with the validation split")
    train_in_full: tuple[str, ...] = Field(
        (),
        description="a diagnostic, not the paper's recipe: base-model parameters whose names contain one of "
        "these (e.g. multi_modal_projector, language_model) train in full beside the LoRA and are saved beside "
        f"the adapter as {FULL_WEIGHTS_FILE}. The rollout server serves LoRA only, so a run config cannot set "
        "this; `benchmarks/demo_sft.py --train-in-full` scores what such an SFT learns",
    )
