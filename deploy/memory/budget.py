"""What the memory planner reports: items of memory, and one process's items against its share."""

from dataclasses import dataclass, field

from deploy.memory.estimates import GIB

DTYPE_BYTES = {"auto": 2, "bfloat16": 2, "float16": 2, "float32": 4}  # auto: both checkpoints are bf16


@dataclass(frozen=True)
class MemoryItem:
    label: str
    gib: float
    detail: str = ""


@dataclass
class ProcessBudget:
    """One process's items (summed into its need) against its share of the GPU."""

    name: str
    items: list[MemoryItem]
    share_gib: float
    share_detail: str
    breakdown: list[MemoryItem] = field(default_factory=list)  # parts of the activation peak, not summed
    advice: str = ""  # what to lower when it does not fit

    @property
    def need_gib(self) -> float:
        return sum(item.gib for item in self.items)

    @property
    def headroom_gib(self) -> float:
        return self.share_gib - self.need_gib

    @property
    def fits(self) -> bool:
        return self.headroom_gib >= 0


def gib(nbytes: float) -> float:
    return nbytes / GIB


def dtype_name(nbytes: int) -> str:
    return "bfloat16" if nbytes == 2 else "float32"
