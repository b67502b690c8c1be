"""benchmarks/gpu_memory.py's CPU path: the script a GPU machine runs, on a real-width MedGemma cut
to one layer, a small vocabulary and 224-px images, with vLLM and Ray made unimportable (the GPU
machine has neither). The GPU run itself is not part of CI."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
PROJECT = Path(__file__).resolve().parents[2]
SCRIPT = PROJECT / "benchmarks" / "gpu_memory.py"
SMOKE = ["--device", "cpu", "--layers", "1", "--vocab", "4096", "--image-size", "224", "--max-tokens", "8",
         "--group-size", "2", "--batch-size", "2"]  # fmt: skip


def run_script(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Run the script with `vllm` and `ray` shadowed by packages that refuse to import."""
    blocked = tmp_path / "blocked"
    for name in ("vllm", "ray"):
        (blocked / name).mkdir(parents=True, exist_ok=True)
        (blocked / name / "__init__.py").write_text(
            f"raise ImportError('{name} must not be imported here')\n"
        )
    env = {"PYTHONPATH": str(blocked), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "2"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_cpu_smoke_measures_both_steps_beside_the_plan(tmp_path):
    result = run_script(SMOKE, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["imported_vllm_or_ray"] is False
    assert figures["model"] == {"arch": "medgemma-4b", "dtype": "float32", "parameters": figures["model"]["parameters"],
                                "text_layers": 1, "vocab": 4096}  # fmt: skip
    assert 100e6 < figures["model"]["parameters"] < 200e6  # real widths: 2560-wide layer, 1152-wide SigLIP
    assert figures["shapes"]["grpo"]["group_size"] == 2 and figures["shapes"]["grpo"]["xrays"] == 2
    assert figures["shapes"]["sft"]["target_tokens"] == figures["shapes"]["grpo"]["completion_tokens"] == 8
    for phase in ("sft", "grpo"):
        row = figures[phase]
        assert row["lora_grad_norm"] > 0  # gradients reached the LoRA through the real step
        assert row["planned_need_gib"] > row["planned_allocated_gib"] > 0
        assert row["peak_allocated_gib"] is None and row["plan_over_measured"] is None  # no CUDA allocator
    assert figures["trainer_cap_gib"] is None
    assert set(figures["assumptions"]) == {"TRAINER_CUDA_CONTEXT_GIB", "TRAINER_FRAGMENTATION"}
    assert "plan-memory" in result.stderr  # the human-readable lines


def test_a_missing_wheel_and_a_missing_module_are_named(tmp_path, capsys):
    result = run_script([*SMOKE, "--peft-wheel", str(tmp_path / "peft-0.21.2-py3-none-any.whl")], tmp_path)
    assert result.returncode == 2
    assert "no such file" in json.loads(result.stdout.strip().splitlines()[-1])["error"]

    spec = importlib.util.spec_from_file_location("gpu_memory_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.NEEDED = {**script.NEEDED, "peft_not_installed_here": "peft"}
    with pytest.raises(SystemExit) as exited:
        script.check_modules()
    assert exited.value.code == 2
    error = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]
    assert error.startswith("missing: peft;") and "--wheel PATH" in error
