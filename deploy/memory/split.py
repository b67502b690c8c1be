"""One GPU budget and every number the run derives from it.

A run config's `gpu:` section is the one place a user sets how the GPU is used: which GPU, whether
the rollout replica(s) and the trainer share it, and vLLM's share. Everything else follows here,
and `cxr-rl plan-memory` prints exactly these numbers beside its estimate:

- vLLM's `gpu_memory_utilization` (each replica's share of the GPU's memory),
- Ray's `num_gpus` for each replica and for the trainer (bookkeeping that co-locates them),
- the trainer's cap, `torch.cuda.set_per_process_memory_fraction`, which makes the split bind: an
  allocation past it fails in the trainer instead of starving vLLM.

Pure arithmetic and a pydantic model; no torch, no Ray.
"""

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from deploy.memory.estimates import TRAINER_CUDA_CONTEXT_GIB, VLLM_CUDA_CONTEXT_GIB
from shared.config import StrictModel

# Memory each GPU reports as its total (torch.cuda.mem_get_info), a little under the name's GB.
GPU_MEMORY_GIB = {
    "a100-80gb": 79.2,
    "a100-40gb": 39.4,
    "h100-80gb": 79.2,
    "h200-141gb": 139.8,
    "l40s-48gb": 44.4,
    "a10g-24gb": 22.0,
}
# Ray keeps fractional resources to 4 decimals.
RAY_RESOLUTION = 10_000
# Keys the `gpu:` section owns; a run config that sets them by hand is refused (two owners).
DERIVED_KEYS = (
    ("rollout", "engine", "gpu_memory_utilization"),
    ("rollout", "placement", "num_gpus"),
    ("trainer", "num_gpus"),
)


class GpuSettings(StrictModel):
    """The GPU budget of a run; `cxr-rl plan-memory` shows what it gives each process."""

    kind: str = Field(description=f"the GPU: one of {', '.join(GPU_MEMORY_GIB)}, or any name with memory_gib")
    memory_gib: float | None = Field(
        None, gt=0, description="its total memory as torch.cuda.mem_get_info reports it (default: from kind)"
    )
    layout: Literal["shared", "separate"] = Field(
        "shared",
        description="shared: the rollout replica(s) and the trainer on one GPU, split by memory; "
        "separate: each on a GPU of its own",
    )
    rollout_share: float = Field(
        0.40,
        gt=0.0,
        lt=1.0,
        description="fraction of the GPU's memory each rollout replica's vLLM takes (its "
        "gpu_memory_utilization); in a shared layout the trainer is capped to what the replicas leave",
    )
    wait_for_share_s: float = Field(
        300.0,
        ge=0.0,
        description="how long a (re)starting replica waits for its share to be free before it fails "
        "naming the processes that hold the memory",
    )

    @model_validator(mode="after")
    def _known_gpu(self) -> "GpuSettings":
        if self.memory_gib is None and self.kind not in GPU_MEMORY_GIB:
            raise ValueError(
                f"kind: unknown GPU {self.kind!r}; known: {', '.join(GPU_MEMORY_GIB)} (or set memory_gib)"
            )
        return self

    @property
    def total_gib(self) -> float:
        return self.memory_gib if self.memory_gib is not None else GPU_MEMORY_GIB[self.kind]


@dataclass(frozen=True)
class GpuSplit:
    """What each process of a run gets of its GPU(s); every field is a number the run uses."""

    kind: str
    gpu_gib: float
    layout: str
    replicas: int
    vllm_memory_utilization: float  # rollout.engine.gpu_memory_utilization, per replica
    rollout_num_gpus: float  # Ray's num_gpus per replica
    trainer_num_gpus: float  # Ray's num_gpus for the trainer
    trainer_memory_fraction: float | None  # torch.cuda.set_per_process_memory_fraction; None: no cap
    rollout_share_gib: float  # what vLLM may take, per replica
    trainer_share_gib: float  # what the plan gives the trainer, its CUDA context included
    wait_for_share_s: float

    @property
    def trainer_cap_gib(self) -> float | None:
        if self.trainer_memory_fraction is None:
            return None
        return self.trainer_memory_fraction * self.gpu_gib

    def describe(self) -> list[str]:
        """The run's numbers, one a line, as `plan-memory` and `train --check` print them."""
        each = " each" if self.replicas > 1 else ""
        lines = [
            f"rollout.engine.gpu_memory_utilization = {self.vllm_memory_utilization:g}{each} "
            f"({self.rollout_share_gib:.1f} GiB of {self.gpu_gib:.1f})",
            f"Ray num_gpus: rollout replica {self.rollout_num_gpus:g}{each}, trainer {self.trainer_num_gpus:g}",
        ]
        if self.trainer_memory_fraction is None:
            lines.append("trainer memory cap: none (a GPU of its own)")
        else:
            lines.append(
                f"trainer memory cap = {self.trainer_memory_fraction:g} of the GPU ({self.trainer_cap_gib:.1f} GiB "
                f"for tensors; + {TRAINER_CUDA_CONTEXT_GIB} GiB CUDA context = its {self.trainer_share_gib:.1f} GiB share)"
            )
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {
            key: round(value, 4) if isinstance(value, float) else value for key, value in asdict(self).items()
        }


def gpu_split(settings: GpuSettings, replicas: int) -> GpuSplit:
    """Derive every per-process number from the budget. In a shared layout each replica holds its
    vLLM share plus the CUDA context vLLM creates before it measures that share; the trainer holds
    the rest, of which its own CUDA context lies outside its allocator cap. Raises ValueError when
    the replicas leave the trainer nothing."""
    total, share = settings.total_gib, settings.rollout_share
    share_gib = share * total
    if settings.layout == "separate":
        return GpuSplit(
            settings.kind, total, "separate", replicas, share, 1.0, 1.0, None, share_gib, total,
            settings.wait_for_share_s,
        )  # fmt: skip
    replica_gib = share_gib + VLLM_CUDA_CONTEXT_GIB
    trainer_share_gib = total - replicas * replica_gib
    cap_gib = trainer_share_gib - TRAINER_CUDA_CONTEXT_GIB
    if cap_gib <= 0:
        raise ValueError(
            f"gpu.rollout_share {share:g} x {replicas} replica(s) of a {total:.1f} GiB GPU leaves the trainer "
            f"{trainer_share_gib:.1f} GiB, less than its CUDA context ({TRAINER_CUDA_CONTEXT_GIB} GiB): "
            "lower gpu.rollout_share or rollout.replicas, or use gpu.layout: separate"
        )
    rollout_num_gpus = math.ceil(replica_gib / total * RAY_RESOLUTION) / RAY_RESOLUTION
    trainer_num_gpus = math.floor((1.0 - replicas * rollout_num_gpus) * RAY_RESOLUTION) / RAY_RESOLUTION
    fraction = math.floor(cap_gib / total * RAY_RESOLUTION) / RAY_RESOLUTION
    return GpuSplit(
        settings.kind, total, "shared", replicas, share, rollout_num_gpus, trainer_num_gpus, fraction,
        share_gib, trainer_share_gib, settings.wait_for_share_s,
    )  # fmt: skip


def refuse_derived_keys(data: Any) -> Any:
    """For RunConfig (before validation): refuse a config that sets a number the `gpu:` section owns."""
    if not isinstance(data, dict):
        return data
    for path in DERIVED_KEYS:
        section: Any = data
        for key in path[:-1]:
            section = section.get(key) if isinstance(section, dict) else None
        if isinstance(section, dict) and path[-1] in section:
            raise ValueError(
                f"{'.'.join(path)} is derived from the gpu: section (one budget for vLLM's share, Ray's "
                "fractions and the trainer's cap); remove it and set gpu: {kind: ..., rollout_share: ...}; "
                "`cxr-rl plan-memory` shows the numbers the run uses"
            )
    return data
