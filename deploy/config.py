"""The run configuration the driver reads (YAML under deploy/configs/). One class owns each option;
the SFT and GRPO sections are the trainer's own configs, completed with the run's model and data."""

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from deploy.memory.split import GpuSettings, GpuSplit, gpu_split, refuse_derived_keys
from rollout_server.config import EngineConfig, EngineSettings
from shared.config import StrictModel
from trainer.grpo.config import GrpoConfig, GrpoSettings, RewardSettings
from trainer.sft.config import SftConfig, SftSettings

EMBEDDED_MODEL = "embedded:tiny-medgemma"


class PhantomData(StrictModel):
    n: int = Field(96, ge=8, description="phantom patients drawn, split among the run's data sets")
    seed: int = Field(0, description="seed of the phantoms, their split and their synthetic SFT targets")


LabelSetName = Literal["chexpert14", "nih9", "nih10"]


class ReportSet(StrictModel):
    """A test set of the final report: scored once, on SFT, the chosen step and the last step, and
    never while training runs (the driver refuses a selection set that shares an image with it)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="its name in the report, e.g. chexpert")
    manifest: Path = Field(description="JSONL manifest, e.g. `cxr-rl data split --nih-root` nih_test.jsonl")
    label_set: LabelSetName | None = Field(
        None, description="labels it is scored on (None: nih9 for an NIH manifest, chexpert14 otherwise)"
    )
    role: Literal["in_distribution", "out_of_distribution"] = Field(
        description="which generalization column of the report it counts in"
    )


class DataSettings(StrictModel):
    """Manifests (JSONL) or, for the embedded demo, a phantom dataset built into the run folder.

    Selection sets (`val_manifest`, `ood_val_manifest`) are scored every K GRPO steps to choose a
    checkpoint; report sets (`report_sets`) only once, at the end. The two never share an image, and
    no selection set holds a row of a dataset's official test split: the driver refuses such a
    config before any training, naming the file."""

    removed_options: ClassVar[dict[str, str]] = {
        "ood_manifest": "ood_manifest was split in two: ood_val_manifest (the OOD selection set, scored while "
        "training) and report_sets (the test sets of the final report)"
    }

    phantoms: PhantomData | None = Field(
        None,
        description="the embedded demo: phantom X-rays built into the run folder, in place of the manifests",
    )
    sft_manifest: Path | None = Field(None, description="with `target` filled (teacher traces or synthetic)")
    rl_manifest: Path | None = Field(
        None, description="the X-rays GRPO samples from, with ground-truth labels"
    )
    val_manifest: Path | None = Field(
        None, description="in-distribution selection set (e.g. `cxr-rl data split` val.jsonl, MIMIC)"
    )
    ood_val_manifest: Path | None = Field(
        None,
        description="out-of-distribution selection set (e.g. `cxr-rl data split --nih-root` nih_val.jsonl)",
    )
    ood_label_set: LabelSetName | None = Field(
        None, description="labels the OOD selection set is scored on (None: nih9 for NIH, else chexpert14)"
    )
    report_sets: list[ReportSet] = Field([], description="test sets of the final report, any number")
    sft_format: str = Field(
        "reasoning_a_sft",
        description="the SFT output format (shared/prompts.py), or one from prompt_formats_file",
    )
    prompt_formats_file: Path | None = Field(
        None,
        description="YAML or JSON of user prompt formats (name: instruction), for SFT, the rollout "
        "server, GRPO and evaluation alike",
    )

    @model_validator(mode="after")
    def _distinct_report_names(self) -> "DataSettings":
        names = [report.name for report in self.report_sets]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"report_sets: name(s) {repeated} used twice")
        return self


class PlacementSettings(StrictModel):
    num_cpus: float = Field(
        0.5, ge=0.0, description="Ray's logical CPUs; small so the demo fits `--num-cpus=2`"
    )
    resources: dict[str, float] = Field(
        {},
        description="custom Ray resources the actor needs, to steer it onto the nodes that declare them "
        "(`ray start --resources`); GPUs come from the gpu: section",
    )


class RolloutSettings(StrictModel):
    replicas: int = Field(1, ge=1, description="rollout servers, each a Ray actor with a vLLM engine")
    host: str = Field(
        "127.0.0.1", description="0.0.0.0 on a multi-node cluster: replicas advertise their node's IP"
    )
    engine: EngineSettings = Field(
        EngineSettings(), description="each replica's vLLM engine (the run sets the model)"
    )
    placement: PlacementSettings = Field(PlacementSettings(), description="where Ray places each replica")
    max_restarts: int = Field(
        3, ge=0, description="times Ray restarts a replica that died before the run fails"
    )


class EvaluationSettings(StrictModel):
    every: int = Field(0, ge=0, description="evaluate every K GRPO steps (0: only before and after)")
    max_images: int | None = Field(
        64,
        ge=1,
        description="images per selection set: a seeded subset stratified by label, the same images "
        "at every evaluation (None: the whole set)",
    )
    subset_seed: int = Field(0, ge=0, description="seed of the selection subsets")
    max_tokens: int = Field(512, ge=1, description="longest answer at evaluation, in tokens")
    selection: Literal["in_distribution", "out_of_distribution", "weighted"] = Field(
        "in_distribution",
        description="the score a checkpoint is chosen by; among the steps not significantly below the "
        "best (paired bootstrap), the earliest is chosen",
    )
    ood_weight: float = Field(0.5, ge=0.0, le=1.0, description="`weighted`: (1-w) ID + w OOD macro-F1")
    confidence: float = Field(
        0.95,
        gt=0.5,
        lt=1.0,
        description="level of the per-step intervals, of 'significantly below the best' and of the OOD "
        "early warning",
    )
    bootstrap_resamples: int = Field(1000, ge=100, description="resamples of every bootstrap")


class RunConfig(StrictModel):
    name: str = Field("run", description="the run's name: in the summary and in its Ray actors' names")
    run_dir: Path = Field(
        Path("runs/run"),
        description="where everything the run writes goes; `cxr-rl train --run-dir` overrides it",
    )
    model: str = Field(EMBEDDED_MODEL, description="a model folder, or the embedded tiny MedGemma")
    data: DataSettings = Field(
        DataSettings(phantoms=PhantomData()), description="manifests, or the embedded demo's phantoms"
    )
    sft: SftSettings | None = Field(SftSettings(), description="null skips SFT")
    grpo: GrpoSettings = Field(GrpoSettings(), description="the GRPO stage, from the SFT checkpoint")
    reward: RewardSettings = Field(RewardSettings(), description="the reward GRPO's rollouts are scored by")
    rollout: RolloutSettings = Field(RolloutSettings(), description="the rollout server replicas")
    trainer: PlacementSettings = Field(PlacementSettings(), description="where Ray places the trainer")
    evaluation: EvaluationSettings = Field(
        EvaluationSettings(), description="selection sets scored while GRPO trains, and how a step is chosen"
    )
    namespace: str = Field(
        "cxr-rl", description="Ray namespace: `cxr-rl reward swap --namespace` finds the run here"
    )
    gpu: GpuSettings | None = Field(
        None,
        description="the GPU budget, one owner for vLLM's share, Ray's GPU fractions and the trainer's "
        "memory cap (see `cxr-rl plan-memory`); null: everything on CPUs",
    )
    placement_timeout_s: float = Field(
        600.0, gt=0.0, description="how long to wait for Ray to place each actor before failing"
    )

    _derived_gpu_keys = model_validator(mode="before")(refuse_derived_keys)

    @model_validator(mode="after")
    def _gpu_budget_leaves_room(self) -> "RunConfig":
        self.gpu_split()  # raises ValueError naming the keys when the replicas leave the trainer nothing
        return self

    def gpu_split(self) -> GpuSplit | None:
        return None if self.gpu is None else gpu_split(self.gpu, self.rollout.replicas)

    def engine_config(self, model: str) -> EngineConfig:
        engine = self.rollout.engine.model_dump()
        split = self.gpu_split()
        if split is not None:
            engine["gpu_memory_utilization"] = split.vllm_memory_utilization
        return EngineConfig.model_validate({**engine, "model": model})

    def sft_config(self, model: str, train_manifest: Path, out: Path) -> SftConfig:
        if self.sft is None:
            raise ValueError("this run skips SFT (sft: null)")
        settings = self.sft.model_dump()
        data = {**settings.pop("data"), "train_manifest": train_manifest, "sft_format": self.data.sft_format}
        if self.data.prompt_formats_file is not None:
            data["prompt_formats_file"] = self.data.prompt_formats_file
        return SftConfig.model_validate({**settings, "model": model, "out": out, "data": data})

    def grpo_config(self, model: str, rl_manifest: Path, sft_adapter: Path | None) -> GrpoConfig:
        return GrpoConfig.model_validate(
            {
                **self.grpo.model_dump(),
                "model": model,
                "rl_manifest": str(rl_manifest),
                "sft_adapter": str(sft_adapter) if sft_adapter else self.grpo.sft_adapter,
                "reward": self.reward.model_dump(),
                "prompt_formats_file": self.data.prompt_formats_file,
            }
        )
