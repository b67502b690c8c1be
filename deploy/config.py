"""The run configuration the driver reads (YAML under deploy/configs/). One class owns each option;
the SFT and GRPO sections are the trainer's own configs, completed with the run's model and data."""

from pathlib import Path
from typing import Literal

from pydantic import Field

from rollout_server.config import EngineConfig, EngineSettings
from shared.config import StrictModel
from trainer.grpo_config import GrpoConfig, GrpoSettings, RewardSettings
from trainer.sft_config import SftConfig, SftSettings

EMBEDDED_MODEL = "embedded:tiny-medgemma"


class PhantomData(StrictModel):
    n: int = Field(96, ge=8)
    seed: int = 0


class DataSettings(StrictModel):
    """Manifests (JSONL) or, for the embedded demo, a phantom dataset built into the run folder."""

    phantoms: PhantomData | None = None
    sft_manifest: Path | None = Field(None, description="with `target` filled (teacher traces or synthetic)")
    rl_manifest: Path | None = None
    val_manifest: Path | None = Field(
        None, description="in-distribution validation (e.g. MIMIC validate or CheXpert)"
    )
    ood_manifest: Path | None = Field(None, description="out-of-distribution (e.g. NIH test)")
    ood_label_set: Literal["chexpert14", "nih9", "nih10"] = "nih9"
    sft_format: str = "reasoning_a_sft"


class PlacementSettings(StrictModel):
    num_cpus: float = Field(
        0.5, ge=0.0, description="Ray's logical CPUs; small so the demo fits `--num-cpus=2`"
    )
    num_gpus: float = Field(0.0, ge=0.0, description="a fraction on one shared GPU (memory partitioning)")


class RolloutSettings(StrictModel):
    replicas: int = Field(1, ge=1)
    host: str = Field(
        "127.0.0.1", description="0.0.0.0 on a multi-node cluster: replicas advertise their node's IP"
    )
    engine: EngineSettings = EngineSettings()
    placement: PlacementSettings = PlacementSettings()
    max_restarts: int = Field(3, ge=0)


class EvaluationSettings(StrictModel):
    every: int = Field(0, ge=0, description="evaluate every K GRPO steps (0: only before and after)")
    max_images: int | None = Field(64, ge=1, description="per dataset, first N (None: all)")
    max_tokens: int = Field(512, ge=1)
    selection: Literal["in_distribution", "out_of_distribution", "weighted"] = "in_distribution"
    ood_weight: float = Field(0.5, ge=0.0, le=1.0)
    max_ood_drop: float | None = Field(
        0.1, gt=0.0, description="early warning threshold (fraction of the best)"
    )


class RunConfig(StrictModel):
    name: str = "run"
    run_dir: Path = Path("runs/run")
    model: str = Field(EMBEDDED_MODEL, description="a model folder, or the embedded tiny MedGemma")
    data: DataSettings = DataSettings(phantoms=PhantomData())
    sft: SftSettings | None = Field(SftSettings(), description="null skips SFT")
    grpo: GrpoSettings = GrpoSettings()
    reward: RewardSettings = RewardSettings()
    rollout: RolloutSettings = RolloutSettings()
    trainer: PlacementSettings = PlacementSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    namespace: str = Field(
        "cxr-rl", description="Ray namespace: `cxr-rl reward swap --namespace` finds the run here"
    )

    def engine_config(self, model: str) -> EngineConfig:
        return EngineConfig.model_validate({**self.rollout.engine.model_dump(), "model": model})

    def sft_config(self, model: str, train_manifest: Path, out: Path) -> SftConfig:
        if self.sft is None:
            raise ValueError("this run skips SFT (sft: null)")
        settings = self.sft.model_dump()
        data = {**settings.pop("data"), "train_manifest": train_manifest, "sft_format": self.data.sft_format}
        return SftConfig.model_validate({**settings, "model": model, "out": out, "data": data})

    def grpo_config(self, model: str, rl_manifest: Path, sft_adapter: Path | None) -> GrpoConfig:
        return GrpoConfig.model_validate(
            {
                **self.grpo.model_dump(),
                "model": model,
                "rl_manifest": str(rl_manifest),
                "sft_adapter": str(sft_adapter) if sft_adapter else self.grpo.sft_adapter,
                "reward": self.reward.model_dump(),
            }
        )
