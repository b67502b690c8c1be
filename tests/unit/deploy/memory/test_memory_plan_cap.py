"""The trainer caps its own GPU memory to the share the run's budget gives it. On a CPU machine
the cap is refused with a clear error; on a GPU (marked `gpu`) an allocation past it fails."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from shared.errors import UserError
from trainer.actor import TrainerActor
from trainer.model import cap_gpu_memory

PROJECT = Path(__file__).resolve().parents[4]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_cap_without_a_gpu_is_refused():
    with pytest.raises(
        UserError, match="gpu: section caps the trainer's GPU memory, but the trainer sees no CUDA GPU"
    ):
        cap_gpu_memory(0.5, 79.2)
    with pytest.raises(UserError, match="sees no CUDA GPU"):
        TrainerActor(memory_fraction=0.5, planned_gpu_gib=79.2)  # the actor caps itself on creation
    assert TrainerActor().grpo is None  # no budget: no cap


CAP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from shared.errors import UserError
    from trainer.model import cap_gpu_memory

    total = torch.cuda.get_device_properties(0).total_memory / 1024**3
    result = {"total_gib": total}
    try:
        cap_gpu_memory(0.1, total * 2)
    except UserError as error:
        result["mismatch"] = str(error)
    cap = cap_gpu_memory(0.1, total)
    result["cap_gib"] = cap
    under = torch.empty(int(0.5 * cap * 1024**3), dtype=torch.uint8, device="cuda")
    result["under_cap"] = under.numel()
    try:
        torch.empty(int(1.5 * cap * 1024**3), dtype=torch.uint8, device="cuda")
        result["over_cap"] = "allocated"
    except torch.OutOfMemoryError:
        result["over_cap"] = "refused"
    print(json.dumps(result))
    """
)


@pytest.mark.gpu
def test_the_cap_binds_on_a_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    # a process of its own: the cap holds for the rest of the process that sets it
    result = subprocess.run(
        [sys.executable, "-c", CAP_SCRIPT], cwd=PROJECT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert "planned for a" in measured["mismatch"] and "set gpu.kind" in measured["mismatch"]
    assert measured["cap_gib"] == pytest.approx(0.1 * measured["total_gib"])
    assert measured["under_cap"] > 0 and measured["over_cap"] == "refused"
