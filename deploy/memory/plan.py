"""The GPU memory budget of a run: what the rollout server (vLLM) and the trainer each need, item by
item, against the share each gets of one GPU (`cxr-rl plan-memory`).

The shares come from the run config's `gpu:` section through `deploy.memory.split`, the same
numbers the run uses: vLLM takes `gpu_memory_utilization` x the GPU's memory (its KV cache fills
whatever its own items leave of that share), the trainer is capped to the rest. The formulas are in
`deploy.memory.estimates` (with the constants no formula gives, and which of them are unmeasured
assumptions), each process's items in `deploy.memory.rollout` and `deploy.memory.trainer`. The
planner never reads the manifests: paths in the config are only validated.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.architectures import ModelShape, model_shape, resolve_model_config
from deploy.config import RunConfig
from deploy.memory.budget import MemoryItem, ProcessBudget
from deploy.memory.estimates import VLLM_CUDA_CONTEXT_GIB
from deploy.memory.rollout import rollout_budget
from deploy.memory.split import GPU_MEMORY_GIB, GpuSettings, GpuSplit, gpu_split
from deploy.memory.trainer import grpo_trainer_budget, sft_trainer_budget
from rollout_server.config import EngineConfig
from shared.errors import UserError
from shared.prompts import BUILTIN_FORMATS
from trainer.grpo.config import GrpoConfig
from trainer.sft.config import SftConfig

__all__ = ["GPU_MEMORY_GIB", "MemoryPlan", "plan_memory", "prompt_tokens_estimate", "require_fit"]
# Prompt length without a tokenizer: English runs about 4 characters a token in both vocabularies;
# 3 keeps the estimate on the safe side. The chat template and image wrapper add a few tokens.
CHARACTERS_PER_TOKEN = 3
CHAT_TEMPLATE_TOKENS = 32
IMAGE_WRAPPER_TOKENS = 8


@dataclass
class MemoryPlan:
    gpu: str
    gpu_gib: float
    model: ModelShape | None
    processes: list[ProcessBudget]
    outside_shares: list[MemoryItem] = field(default_factory=list)
    split: GpuSplit | None = None  # the numbers the run uses
    shared_gpu: bool = True
    replicas: int = 1  # rollout replicas (each with its own share)
    summary: str = ""  # the workload in one line
    warnings: list[str] = field(default_factory=list)
    no_gpu_reason: str = ""

    def process(self, name: str) -> ProcessBudget | None:
        return next((p for p in self.processes if p.name.startswith(name)), None)

    @property
    def fits(self) -> bool:
        return all(process.fits for process in self.processes)

    def overflow_message(self) -> str | None:
        """One line naming every process that does not fit, with its numbers; None when all fit."""
        problems = [
            f"{process.name} needs {process.need_gib:.1f} GiB but its share is {process.share_gib:.1f} GiB "
            f"({process.share_detail}) on {self.gpu}: {process.advice}"
            for process in self.processes
            if not process.fits
        ]
        return "; ".join(problems) or None

    def totals(self) -> dict[str, Any]:
        rollout = self.process("rollout")
        trainers = [p for p in self.processes if p.name.startswith("trainer")]
        need = max(trainers, key=lambda p: p.need_gib) if trainers else None
        rounded = lambda value: None if value is None else round(value, 2)  # noqa: E731
        return {
            "gpu": self.gpu,
            "gpu_gib": self.gpu_gib,
            "rollout_gib": rounded(rollout.need_gib if rollout else None),
            "trainer_gib": rounded(need.need_gib if need else None),
            "rollout_share_gib": rounded(rollout.share_gib if rollout else None),
            "trainer_share_gib": rounded(need.share_gib if need else None),
            "fits": self.fits if self.processes else None,
            "split": self.split.as_dict() if self.split else None,
        }


def prompt_tokens_estimate(prompt_format: str, image_tokens: int) -> int:
    """Image tokens plus the instruction's estimated tokens (a user format: the longest built-in)."""
    formats = BUILTIN_FORMATS
    text = (
        formats[prompt_format].user_text()
        if prompt_format in formats
        else max((f.user_text() for f in formats.values()), key=len)
    )
    return (
        image_tokens
        + IMAGE_WRAPPER_TOKENS
        + math.ceil(len(text) / CHARACTERS_PER_TOKEN)
        + CHAT_TEMPLATE_TOKENS
    )


def plan_memory(
    config: RunConfig,
    gpu: str | None = None,
    *,
    arch: str | None = None,
    prompt_tokens: int | None = None,
    sft_target_tokens: int | None = None,
) -> MemoryPlan:
    """Itemise the GPU memory of `config` against the shares its `gpu:` section gives each process.

    `gpu` (a name from GPU_MEMORY_GIB) plans the same config on another GPU; `arch` overrides the
    architecture read from the model folder or name; `prompt_tokens` replaces the prompt-length
    estimate; `sft_target_tokens` is the longest SFT target (default: GRPO's max_tokens)."""
    if gpu is not None and gpu not in GPU_MEMORY_GIB:
        raise UserError(f"unknown GPU {gpu!r}; known: {', '.join(GPU_MEMORY_GIB)}")
    settings = config.gpu
    if settings is None:
        return MemoryPlan(
            gpu or "", GPU_MEMORY_GIB.get(gpu or "", 0.0), None, [],
            no_gpu_reason="no GPU budget to plan: the config has no gpu: section, so it runs on CPUs (vLLM's KV "
            "cache is rollout.engine.cpu_kv_cache_gib of RAM); add gpu: {kind: a100-80gb, rollout_share: 0.4} to "
            "put it on a GPU",
        )  # fmt: skip
    if gpu is not None:
        settings = GpuSettings.model_validate({**settings.model_dump(), "kind": gpu, "memory_gib": None})
    replicas = config.rollout.replicas
    try:
        split = gpu_split(settings, replicas)
    except ValueError as error:
        raise UserError(str(error)) from None
    gpu_gib = split.gpu_gib
    name, hf_config = resolve_model_config(config.model, arch)
    shape = model_shape(hf_config, name)
    engine = config.engine_config(config.model)
    grpo = config.grpo_config(config.model, config.data.rl_manifest or Path("rl.jsonl"), None)
    sft = _sft_config(config)
    group_size, batch = grpo.sampling.group_size, grpo.batch_size
    image_tokens = shape.vision.image_tokens(engine.max_pixels)
    prompt = prompt_tokens or prompt_tokens_estimate(grpo.prompt_format, image_tokens)
    plan = MemoryPlan(settings.kind, gpu_gib, shape, [], split=split, replicas=replicas)
    plan.shared_gpu = split.layout == "shared"
    plan.summary = (
        f"GRPO: {batch} X-rays x {group_size} completions x {grpo.sampling.max_tokens} tokens, prompt ~{prompt} "
        f"tokens ({image_tokens} image tokens); "
        + ("rollout server and trainer share one GPU" if plan.shared_gpu else "each process on its own GPU")
    )
    _warn_about_inputs(plan, shape, engine, grpo, prompt, replicas)
    rollout = rollout_budget(shape, engine, grpo, prompt, gpu_gib, replicas)
    plan.processes.append(rollout)
    plan.outside_shares.append(
        MemoryItem(
            "vLLM CUDA context, per replica",
            VLLM_CUDA_CONTEXT_GIB,
            "created before vLLM measures its share (assumed)",
        )
    )
    share = split.trainer_share_gib
    if plan.shared_gpu:
        share_detail = (
            f"{gpu_gib:.1f} GiB - {replicas} x ({rollout.share_gib:.1f} GiB vLLM share + "
            f"{VLLM_CUDA_CONTEXT_GIB} GiB vLLM CUDA context); capped at {split.trainer_cap_gib:.1f} GiB + context"
        )
    else:
        share_detail = "a GPU of its own"
    adapter_lora = sft.lora if sft is not None else grpo.lora  # GRPO starts from the SFT adapter
    has_reference = sft is not None or grpo.sft_adapter is not None
    plan.processes.append(
        grpo_trainer_budget(shape, grpo, adapter_lora, has_reference, prompt, share, share_detail)
    )
    if sft is not None:
        sft_prompt = prompt_tokens or prompt_tokens_estimate(
            sft.data.sft_format, shape.vision.image_tokens(sft.max_pixels)
        )
        target = sft_target_tokens or grpo.sampling.max_tokens
        plan.processes.append(sft_trainer_budget(shape, sft, sft_prompt, target, share, share_detail))
    return plan


def require_fit(config: RunConfig, model: Path) -> MemoryPlan:
    """The plan of `config` with its model folder `model`; UserError naming each process that does
    not fit (the driver's check before it places anything)."""
    plan = plan_memory(config.model_copy(update={"model": str(model)}))
    overflow = plan.overflow_message()
    if overflow:
        raise UserError(f"the GPU budget does not fit (see `cxr-rl plan-memory`): {overflow}")
    return plan


def _sft_config(config: RunConfig) -> SftConfig | None:
    if config.sft is None:
        return None
    return config.sft_config(config.model, config.data.sft_manifest or Path("sft.jsonl"), Path("sft"))


def _warn_about_inputs(
    plan: MemoryPlan, shape: ModelShape, engine: EngineConfig, grpo: GrpoConfig, prompt: int, replicas: int
) -> None:
    sequence = prompt + grpo.sampling.max_tokens
    if sequence > engine.max_model_len:
        plan.warnings.append(
            f"prompt ~{prompt} + max_tokens {grpo.sampling.max_tokens} = {sequence} tokens exceeds "
            f"rollout.engine.max_model_len {engine.max_model_len}: long completions would be cut"
        )
    per_replica = math.ceil(grpo.batch_size / replicas) * grpo.sampling.group_size
    if per_replica > engine.max_num_seqs:
        plan.warnings.append(
            f"{per_replica} sequences per replica per step but max_num_seqs is {engine.max_num_seqs}: rollouts run in waves"
        )
    if shape.vision.fixed_image_tokens is None:
        if engine.max_pixels is None:
            plan.warnings.append(
                f"rollout.engine.max_pixels is unset: an X-ray may become {shape.vision.image_tokens(None):,} image "
                "tokens; set min/max_pixels (the paper used 256-512 tokens: 200704-401408 pixels)"
            )
        if (grpo.min_pixels, grpo.max_pixels) != (engine.min_pixels, engine.max_pixels):
            plan.warnings.append(
                f"grpo min/max_pixels ({grpo.min_pixels}, {grpo.max_pixels}) differ from rollout.engine's "
                f"({engine.min_pixels}, {engine.max_pixels}): the trainer will refuse the server's prompts"
            )
