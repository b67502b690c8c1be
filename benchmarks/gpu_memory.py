"""The trainer's SFT and GRPO peak GPU memory on a random-weight MedGemma-4B in bf16, at the shipped
config's shapes (deploy/configs/medgemma-4b-a100.yaml), beside `cxr-rl plan-memory`'s estimate.

Built for a GPU machine with nothing but torch, transformers and accelerate: no vLLM, no Ray, no
network. The model comes from MedGemma-4B's configuration (deploy/architectures.py) with random
weights, allocated on the GPU directly; the steps are the trainer's own (deploy/memory/measure.py:
trainer/sft/training.py's optimizer step; trainer/grpo/trainer.py's reference pass, policy pass with entropy and GRPO
token loss per group), each measured over its second step, with the trainer's memory cap from the
run's split for this GPU applied (so the cap is exercised as the run would set it). Needs, besides
torch/transformers/accelerate: peft, pydantic, pyyaml and pillow; bring wheels of any that are
missing and pass each with `--wheel PATH` (installed with `pip install --no-deps`), e.g.

    python benchmarks/gpu_memory.py --wheel peft-0.21.2-py3-none-any.whl

About 2-4 minutes on an H200 (model build, two SFT and two GRPO steps). The last line printed is
one JSON object: measured peaks, the plan's estimate, their ratio, and the trainer's CUDA context
and fragmentation measured against the assumptions in deploy/memory/estimates.py.
On a CPU it runs a reduced model as a smoke test (no peaks):

    python benchmarks/gpu_memory.py --device cpu --layers 1 --vocab 4096 --image-size 224 --max-tokens 8 --batch-size 1 --group-size 2
"""

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: the project root, not benchmarks/, comes first
    sys.path[0] = str(Path(__file__).resolve().parents[1])

PROJECT = Path(__file__).resolve().parents[1]
CONFIG = PROJECT / "deploy" / "configs" / "medgemma-4b-a100.yaml"
NEEDED = {"torch": "torch", "transformers": "transformers", "accelerate": "accelerate", "peft": "peft",
          "pydantic": "pydantic", "yaml": "pyyaml", "PIL": "pillow"}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/gpu_memory.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--wheel", "--peft-wheel", action="append", default=[], metavar="PATH",
                        help="a wheel to install first with pip --no-deps (repeatable), e.g. peft's")  # fmt: skip
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument(
        "--layers", type=int, help="text and vision layers (default: MedGemma-4B's 34 and 27)"
    )
    parser.add_argument("--vocab", type=int, help="vocabulary size (default: MedGemma-4B's 262,208)")
    parser.add_argument(
        "--image-size", type=int, help="image side in pixels, a multiple of 224 (default 896)"
    )
    parser.add_argument(
        "--max-tokens", type=int, help="GRPO completion and SFT target tokens (default: the config's)"
    )
    parser.add_argument("--group-size", type=int, help="GRPO completions per X-ray (default: the config's)")
    parser.add_argument("--batch-size", type=int, help="GRPO X-rays per step (default: the config's)")
    parser.add_argument("--no-cap", action="store_true", help="do not apply the trainer's memory cap")
    return parser.parse_args(argv)


def install_wheels(wheels: list[str]) -> None:
    for wheel in wheels:
        if not Path(wheel).is_file():
            fail(f"--wheel {wheel}: no such file")
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", wheel], check=True)
    importlib.invalidate_caches()


def fail(message: str) -> None:
    print(json.dumps({"benchmark": "gpu_memory", "error": message}))
    sys.exit(2)


def check_modules() -> None:
    missing = [package for module, package in NEEDED.items() if importlib.util.find_spec(module) is None]
    if missing:
        fail(f"missing: {', '.join(missing)}; bring their wheels and pass each with --wheel PATH")


def run_config(args: argparse.Namespace) -> Any:
    """The shipped config, its data section reduced to what shapes the steps (manifests are never
    read), with the command line's overrides."""
    import yaml

    from deploy.config import RunConfig
    from shared.config import merge_nested, parse_config

    data = yaml.safe_load(CONFIG.read_text())
    data["data"] = {
        "sft_manifest": "sft.jsonl",
        "rl_manifest": "rl.jsonl",
        "sft_format": data["data"]["sft_format"],
    }
    sampling = {
        key: value
        for key, value in (("max_tokens", args.max_tokens), ("group_size", args.group_size))
        if value
    }
    grpo = {"sampling": sampling, **({"batch_size": args.batch_size} if args.batch_size else {})}
    return parse_config(merge_nested(data, {"grpo": grpo}), RunConfig, source=str(CONFIG))


def gpu_settings(config: Any, device: Any) -> Any:
    """The run's gpu: section re-pointed at this GPU (the table's name when its memory matches)."""
    import torch

    from deploy.memory.split import GPU_MEMORY_GIB, GpuSettings

    if device.type != "cuda":
        return config.gpu
    properties = torch.cuda.get_device_properties(device)
    total = properties.total_memory / 1024**3
    kind = next(
        (name for name, gib in GPU_MEMORY_GIB.items() if abs(gib - total) <= 0.03 * gib), properties.name
    )
    return GpuSettings.model_validate({**config.gpu.model_dump(), "kind": kind, "memory_gib": total})


def planned(config: Any, hf_config: Any, folder: Path) -> Any:
    """plan-memory's estimate for this very model (its config.json in `folder`)."""
    from deploy.memory.plan import plan_memory

    hf_config.save_pretrained(folder)
    return plan_memory(config.model_copy(update={"model": str(folder)}))


def compare(measured: dict[str, float], budget: Any) -> dict[str, Any]:
    from deploy.memory.estimates import TRAINER_CUDA_CONTEXT_GIB

    margin = next(item.gib for item in budget.items if item.label.startswith("allocator fragmentation"))
    planned_allocated = budget.need_gib - TRAINER_CUDA_CONTEXT_GIB - margin
    process = measured["peak_reserved_gib"] + measured["outside_allocator_gib"]
    return {
        **{key: _round(value) for key, value in measured.items()},
        "measured_process_gib": _round(process),
        "planned_need_gib": _round(budget.need_gib),
        "planned_allocated_gib": _round(planned_allocated),
        "plan_over_measured": _round(budget.need_gib / process),
        "allocated_plan_over_measured": _round(planned_allocated / measured["peak_allocated_gib"]),
    }


def _round(value: float, digits: int = 3) -> float | None:
    """None for NaN (no CUDA allocator off the GPU): the JSON line stays strict JSON."""
    return None if value != value else round(value, digits)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    install_wheels(args.wheel)
    check_modules()
    import torch

    from deploy.architectures import MEDGEMMA_4B, build_random_model, scaled_config
    from deploy.memory.estimates import TRAINER_CUDA_CONTEXT_GIB, TRAINER_FRAGMENTATION
    from deploy.memory.measure import measure_grpo_step, measure_sft_step
    from deploy.memory.plan import prompt_tokens_estimate
    from trainer.model import cap_gpu_memory

    if args.device == "cuda" and not torch.cuda.is_available():
        fail("no CUDA GPU visible (use --device cpu for the smoke test)")
    device = torch.device(args.device, 0) if args.device == "cuda" else torch.device("cpu")
    config = run_config(args)
    config = config.model_copy(update={"gpu": gpu_settings(config, device)})
    hf_config = scaled_config(MEDGEMMA_4B, layers=args.layers, vocab=args.vocab, image_size=args.image_size)
    with tempfile.TemporaryDirectory() as folder:
        plan = planned(config, hf_config, Path(folder))
    split = plan.split
    cap_gib = None
    if device.type == "cuda" and not args.no_cap:
        cap_gib = cap_gpu_memory(split.trainer_memory_fraction, split.gpu_gib)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    built = time.perf_counter()
    model = build_random_model(hf_config, device=str(device), dtype=dtype)
    build_s = time.perf_counter() - built
    grpo = config.grpo_config(config.model, Path("rl.jsonl"), None)
    sft = config.sft_config(config.model, Path("sft.jsonl"), Path("sft"))
    image_tokens = hf_config.mm_tokens_per_image
    grpo_prompt = prompt_tokens_estimate(grpo.prompt_format, image_tokens)
    sft_prompt = prompt_tokens_estimate(sft.data.sft_format, image_tokens)
    max_tokens = grpo.sampling.max_tokens

    phase = time.perf_counter()
    sft_measured = measure_sft_step(
        model, hf_config, lora=sft.lora, prompt_tokens=sft_prompt, target_tokens=max_tokens,
        gradient_checkpointing=sft.gradient_checkpointing,
    )  # fmt: skip
    sft_s = time.perf_counter() - phase
    phase = time.perf_counter()
    grpo_measured = measure_grpo_step(
        model, hf_config, group_size=grpo.sampling.group_size, prompt_tokens=grpo_prompt,
        completion_tokens=max_tokens, batch_size=grpo.batch_size, lora=sft.lora.model_copy(update={"dropout": 0.0}),
        loss=grpo.loss, gradient_checkpointing=grpo.gradient_checkpointing,
    )  # fmt: skip
    grpo_s = time.perf_counter() - phase

    losses = {"sft_loss": sft_measured.pop("loss"), "grpo_loss": grpo_measured.pop("loss")}
    figures = {
        "benchmark": "gpu_memory",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "gpu": split.kind,
        "gpu_gib": round(split.gpu_gib, 2),
        "versions": {name: _version(name) for name in ("torch", "transformers", "peft", "accelerate")},
        "model": {
            "arch": MEDGEMMA_4B,
            "dtype": str(dtype).removeprefix("torch."),
            "parameters": plan.model.parameters.total,
            "text_layers": hf_config.text_config.num_hidden_layers,
            "vocab": hf_config.text_config.vocab_size,
        },  # fmt: skip
        "shapes": {
            "sft": {"prompt_tokens": sft_prompt, "target_tokens": max_tokens, "batch": 1},
            "grpo": {
                "prompt_tokens": grpo_prompt,
                "completion_tokens": max_tokens,
                "group_size": grpo.sampling.group_size,
                "xrays": grpo.batch_size,
            },  # fmt: skip
        },
        "trainer_cap_gib": round(cap_gib, 2) if cap_gib else None,
        "sft": compare(sft_measured, plan.process("trainer, SFT")),
        "grpo": compare(grpo_measured, plan.process("trainer, GRPO")),
        **{key: round(value, 4) for key, value in losses.items()},
        "assumptions": {
            "TRAINER_CUDA_CONTEXT_GIB": {
                "assumed": TRAINER_CUDA_CONTEXT_GIB,
                "measured": _round(grpo_measured["outside_allocator_gib"]),
            },
            "TRAINER_FRAGMENTATION": {
                "assumed": TRAINER_FRAGMENTATION,
                "measured": {
                    phase: _round(m["peak_reserved_gib"] / m["peak_allocated_gib"] - 1)
                    for phase, m in (("sft", sft_measured), ("grpo", grpo_measured))
                },
            },
        },  # fmt: skip
        "seconds": {
            "build": round(build_s, 1),
            "sft": round(sft_s, 1),
            "grpo": round(grpo_s, 1),
            "total": round(time.perf_counter() - started, 1),
        },  # fmt: skip
        "imported_vllm_or_ray": any(name in sys.modules for name in ("vllm", "ray")),
    }
    for phase in ("sft", "grpo"):
        row = figures[phase]
        print(
            f"{phase}: measured peak {row['peak_allocated_gib']} GiB allocated, {row['peak_reserved_gib']} reserved, "
            f"{row['measured_process_gib']} for the process; plan-memory {row['planned_need_gib']} GiB "
            f"(ratio {row['plan_over_measured']})",
            file=sys.stderr,
        )
    print(json.dumps(figures))
    return 0


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
