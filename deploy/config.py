"""The run configuration the driver reads (YAML under deploy/configs/). One class owns each option;
the SFT and GRPO sections are the trainer's own configs, completed with the run's model and data."""

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rollout_server.config import EngineConfig
from shared.config import parse_config
from trainer.grpo_config import GrpoConfig, RewardSettings
from trainer.sft_config import SftConfig

EMBEDDED_MODEL = "embedded:tiny-medgemma"


class PhantomData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(96, ge=8)
    seed: int = 0


class DataSettings(BaseModel):
    """Manifests (JSONL) or, for the embedded demo, a phantom dataset built into the run folder."""

    model_config = ConfigDict(extra="forbid")

    phantoms: PhantomData | None = None
    sft_manifest: Path | None = None  # with `target` filled (teacher traces or synthetic)
    rl_manifest: Path | None = None
    val_manifest: Path | None = None  # in-distribution validation (e.g. MIMIC validate or CheXpert)
    ood_manifest: Path | None = None  # out-of-distribution (e.g. NIH test)
    ood_label_set: Literal["chexpert14", "nih9", "nih10"] = "nih9"
    sft_format: str = "reasoning_a_sft"


class PlacementSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_cpus: float = Field(0.5, ge=0.0)  # Ray's logical CPUs; small so the demo fits `--num-cpus=2`
    num_gpus: float = Field(0.0, ge=0.0)  # a fraction on one shared GPU (memory partitioning)


class RolloutSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(1, ge=1)
    host: str = "127.0.0.1"  # 0.0.0.0 on a multi-node cluster: replicas advertise their node's IP
    engine: dict[str, Any] = {}  # EngineConfig options; `model` comes from the run
    placement: PlacementSettings = PlacementSettings()
    max_restarts: int = Field(3, ge=0)


class EvaluationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    every: int = Field(0, ge=0)  # evaluate every K GRPO steps (0: only before and after)
    max_images: int | None = Field(64, ge=1)  # per dataset, first N (None: all)
    max_tokens: int = Field(512, ge=1)
    selection: Literal["in_distribution", "out_of_distribution", "weighted"] = "in_distribution"
    ood_weight: float = Field(0.5, ge=0.0, le=1.0)
    max_ood_drop: float | None = Field(0.1, gt=0.0)  # early warning threshold (fraction of the best)


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "run"
    run_dir: Path = Path("runs/run")
    model: str = EMBEDDED_MODEL  # a model folder, or the embedded tiny MedGemma
    data: DataSettings = DataSettings(phantoms=PhantomData())
    sft: dict[str, Any] | None = {}  # SftConfig options (None: skip SFT)
    grpo: dict[str, Any] = {}  # GrpoConfig options
    reward: RewardSettings = RewardSettings()
    rollout: RolloutSettings = RolloutSettings()
    trainer: PlacementSettings = PlacementSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    namespace: str = "cxr-rl"  # Ray namespace: `cxr-rl reward swap --namespace` finds the run here

    def engine_config(self, model: str) -> EngineConfig:
        return parse_config({**self.rollout.engine, "model": model}, EngineConfig, source="rollout.engine")

    def sft_config(self, model: str, train_manifest: Path, out: Path) -> SftConfig:
        section = dict(self.sft or {})
        data = {
            "train_manifest": str(train_manifest),
            "sft_format": self.data.sft_format,
            **section.pop("data", {}),
        }
        return parse_config(
            {**section, "model": model, "out": str(out), "data": data}, SftConfig, source="sft"
        )

    def grpo_config(self, model: str, rl_manifest: Path, sft_adapter: Path | None) -> GrpoConfig:
        values = {
            **self.grpo,
            "model": model,
            "rl_manifest": str(rl_manifest),
            "sft_adapter": str(sft_adapter) if sft_adapter else self.grpo.get("sft_adapter"),
            "reward": self.reward.model_dump(),
        }
        return parse_config(values, GrpoConfig, source="grpo")
