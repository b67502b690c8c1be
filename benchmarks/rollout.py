"""Rollout throughput and adapter swap latency, side by side on the same prompts.

- our HTTP API: a real `cxr-rl serve` process, concurrent requests from the async client;
- vLLM's async engine in-process, built with the options our server builds (`engine_args`);
- transformers `generate` on the same model (what a TRL user gets without vLLM);
- adapter swap latency: an adapter upload (raw safetensors), live once the canary moved;
- a LoRA adapter served beside the same weights merged into the base;
- our OpenAI endpoint beside vLLM's own OpenAI server, both up at once (benchmarks/rollout_openai.py).

    python benchmarks/rollout.py --help     (or: python -m benchmarks.rollout --help)

The paths take turns on each batch (their order rotated per repeat) and never run at once, so they
do not share the CPU and drift in the machine's load falls on all of them alike. Each batch of
X-rays is used once per path, so vLLM's prefix cache never hits across repeats. The last line
printed is one JSON object of the figures.
"""

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run as a file, this script's folder would come first on the import path, and its neighbours
# (benchmarks/rewards.py) would shadow the project's packages: put the project root there instead.
if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.rollout_paths import (  # noqa: E402
    BatchRun,
    DirectEnginePath,
    HttpPath,
    ImageSet,
    Sampling,
    TransformersPath,
    measure_swaps,
    same_samples,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def positive_ints(text: str) -> list[int]:
        try:
            values = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
        if not values or min(values) < 1:
            raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
        return values

    parser = argparse.ArgumentParser(
        prog="benchmarks/rollout.py",
        description=(
            "Measure rollout throughput (completions/s, tokens/s) through the cxr-rl HTTP API, vLLM's "
            "engine in-process and transformers generate on the same phantom X-rays and prompts; adapter "
            "swap latency; and a LoRA adapter against the same weights merged. Prints a table, then one "
            "JSON line."
        ),
    )
    # fmt: off
    add = parser.add_argument
    add("--model", type=Path, metavar="DIR", help="model folder (hub layout); default: build the tiny MedGemma")
    add("--work-dir", type=Path, metavar="DIR",
        help="folder for the model, images, adapters and server logs, kept afterwards "
             "(default: a temporary folder, deleted at the end)")
    add("--batch-sizes", type=positive_ints, default=[8, 32], metavar="B1,B2",
        help="X-rays per batch, comma-separated (default 8,32); the biggest is the headline")
    add("--n", type=int, default=4, help="completions per X-ray, GRPO's G (default 4)")
    add("--max-tokens", type=int, default=64, metavar="T", help="most tokens per completion (default 64)")
    add("--repeats", type=int, default=5, metavar="R",
        help="measured batches per path and batch size, after one warm-up batch (default 5)")
    add("--swaps", type=int, default=20, metavar="S", help="timed adapter swaps, after 2 untimed (default 20)")
    add("--items-per-request", type=int, default=4, metavar="K",
        help="X-rays per HTTP request; a batch goes as concurrent requests (default 4)")
    add("--prompt-format", default="reasoning_a", metavar="NAME", help="prompt format (default reasoning_a)")
    add("--image-size", type=int, default=512, metavar="PX", help="phantom X-ray side in pixels (default 512)")
    add("--temperature", type=float, default=0.8, help="sampling temperature (default 0.8)")
    add("--top-p", type=float, default=0.95, help="nucleus sampling top-p (default 0.95)")
    add("--max-num-seqs", type=int, default=64, metavar="M",
        help="engine option: sequences decoded at once (default 64, the server's default)")
    add("--seed", type=int, default=0, help="seed of the images, adapters and samples (default 0)")
    add("--cpu-lora-ops", choices=("grouped", "vllm"), default="grouped",
        help="engine option on CPU: LoRA as one matrix product per adapter (grouped, the server's default) "
        "or vLLM's own per-token ops (vllm)")
    add("--torch-threads", type=int, metavar="N",
        help="CPU threads of transformers generate (default: torch's own choice)")
    add("--skip-hf", action="store_true", help="leave out transformers generate")
    add("--skip-swaps", action="store_true", help="leave out the adapter swap latency")
    add("--skip-merged", action="store_true", help="leave out LoRA versus merged serving")
    add("--skip-openai", action="store_true", help="leave out our OpenAI endpoint beside vLLM's OpenAI server")
    add("--openai-requests", type=int, default=64, metavar="C",
        help="concurrent chat completions per round, n=--n each (default 64)")
    add("--openai-rounds", type=int, default=5, metavar="R",
        help="measured rounds per server, after one warm-up round each (default 5)")
    # fmt: on
    args = parser.parse_args(argv)
    for name in ("n", "max_tokens", "repeats", "swaps", "items_per_request", "image_size", "max_num_seqs",
                 "openai_requests", "openai_rounds"):  # fmt: skip
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.torch_threads is not None and args.torch_threads < 1:
        parser.error("--torch-threads must be at least 1")
    return args


def image_sets(images: list[bytes], batch_sizes: list[int], repeats: int, seed: int) -> list[ImageSet]:
    """Consecutive, disjoint slices of `images`: repeat-major, so each repeat covers every size."""
    sets, offset = [], 0
    for repeat in range(repeats):
        for batch in batch_sizes:
            sets.append(ImageSet(batch, repeat, images[offset : offset + batch], seed + offset))
            offset += batch
    return sets


async def measure(
    paths: list[Any], sets: list[ImageSet], warmup: ImageSet, desc: str
) -> dict[str, list[BatchRun]]:
    from tqdm import tqdm

    for path in paths:  # vLLM's first batches (and torch's) are slow one-offs
        await path.run(warmup)
    runs: dict[str, list[BatchRun]] = {path.name: [] for path in paths}
    for index, image_set in enumerate(tqdm(sets, desc=desc, unit="batch")):
        shift = index % len(paths)
        for path in paths[shift:] + paths[:shift]:
            runs[path.name].append(await path.run(image_set))
    return runs


def summarise(runs: list[BatchRun], reference: list[BatchRun]) -> dict[str, float]:
    """Medians over the repeats; `vs_reference` is the median of per-batch ratios to the reference
    path on the same X-rays, run next to it in time (steadier than a ratio of medians on a busy
    machine)."""
    rates = [run.tokens / run.seconds for run in runs]
    figures = {
        "tokens_per_s": round(statistics.median(rates), 1),
        "tokens_per_s_min": round(min(rates), 1),
        "tokens_per_s_max": round(max(rates), 1),
        "completions_per_s": round(statistics.median(run.completions / run.seconds for run in runs), 2),
        "seconds_per_batch": round(statistics.median(run.seconds for run in runs), 3),
        "tokens_per_batch": round(statistics.mean(run.tokens for run in runs), 1),
        "vs_reference": round(
            statistics.median(
                (run.tokens / run.seconds) / (ref.tokens / ref.seconds)
                for run, ref in zip(runs, reference, strict=True)
            ),
            3,
        ),
    }
    if any(run.front_cpu_seconds for run in runs):
        figures["front_cpu_ms"] = round(1000 * statistics.median(run.front_cpu_seconds for run in runs), 1)
    if any(run.engine_seconds for run in runs):
        figures["outside_engine_share"] = round(
            statistics.median(1 - run.engine_seconds / run.seconds for run in runs), 3
        )
    return figures


def by_batch(runs: dict[str, list[BatchRun]], reference: str) -> dict[str, dict[str, dict[str, float]]]:
    sizes = sorted({run.batch for path_runs in runs.values() for run in path_runs})

    def of_size(name: str, size: int) -> list[BatchRun]:
        return [run for run in runs[name] if run.batch == size]

    return {
        str(size): {name: summarise(of_size(name, size), of_size(reference, size)) for name in runs}
        for size in sizes
    }


def print_throughput(title: str, table: dict[str, dict[str, dict[str, float]]], reference: str) -> None:
    print(f"\n{title}")
    print(
        f"{'path':<14}{'batch':>6}{'compl/s':>9}{'tokens/s':>10}{'(min-max)':>14}{'s/batch':>9}"
        f"{'tokens':>8}{'front CPU ms':>14}{'vs ' + reference:>16}"
    )
    for batch, by_path in table.items():
        for path, f in by_path.items():
            spread = f"{f['tokens_per_s_min']:.0f}-{f['tokens_per_s_max']:.0f}"
            cpu = f"{f['front_cpu_ms']:.0f}" if "front_cpu_ms" in f else "-"
            print(
                f"{path:<14}{batch:>6}{f['completions_per_s']:>9.1f}{f['tokens_per_s']:>10.0f}{spread:>14}"
                f"{f['seconds_per_batch']:>9.2f}{f['tokens_per_batch']:>8.0f}{cpu:>14}"
                f"{f['vs_reference']:>16.2f}"
            )
    print(
        f"vs {reference}: median over repeats of the ratio of tokens/s on the same X-rays, run back to back. "
        "front CPU: CPU time per batch outside vLLM's engine core (client and server processes for HTTP)."
    )


@dataclass
class Workload:
    model_dir: Path
    engine: Any  # EngineConfig, shared by the server and the in-process engine
    sampling: Sampling
    warmup: ImageSet
    sets: list[ImageSet]

    def server_config(self, model: Path, adapter_dir: Path) -> dict[str, Any]:
        from rollout_server.config import ServerConfig

        engine = self.engine.model_copy(update={"model": str(model)})
        return ServerConfig(engine=engine, adapter_dir=adapter_dir).model_dump(mode="json", exclude_none=True)


def prepare_workload(args: argparse.Namespace, work: Path) -> Workload:
    from benchmarks.common import phantom_xrays
    from rollout_server.config import EngineConfig
    from shared.errors import UserError
    from shared.prompts import PromptRegistry

    PromptRegistry().get(args.prompt_format)  # an unknown name fails now, not after the engines start
    model_dir = args.model
    if model_dir is None:
        from tiny_models import build_tiny_model

        model_dir = build_tiny_model("medgemma", work / "tiny-medgemma", seed=0)
    if not (model_dir / "config.json").is_file():
        raise UserError(f"--model {model_dir}: no config.json there (expected a model folder in hub layout)")
    biggest = max(args.batch_sizes)
    needed = biggest + sum(args.batch_sizes) * args.repeats
    images = phantom_xrays(work / "phantoms", needed, seed=args.seed, size=args.image_size)
    return Workload(
        model_dir=model_dir,
        engine=EngineConfig(
            model=str(model_dir),
            max_num_seqs=args.max_num_seqs,
            seed=args.seed,
            cpu_lora_ops=args.cpu_lora_ops,
        ),
        sampling=Sampling(args.n, args.temperature, args.top_p, args.max_tokens, args.prompt_format),
        warmup=ImageSet(biggest, -1, images[:biggest], args.seed + 10_000_000),
        sets=image_sets(images[biggest:], args.batch_sizes, args.repeats, args.seed),
    )


async def benchmark(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from benchmarks.common import ServerProcess, random_lora_model, randomise_lora, save_merged_model
    from benchmarks.rollout_openai import ChatLoad, VllmServer, openai_comparison
    from rollout_server.client import AsyncRolloutClient
    from shared.schemas import AdapterSelector
    from trainer.lora import adapter_update

    # SIGTERM (as from `timeout` or a job scheduler) cancels like Ctrl-C does, so the servers and
    # engines started below are stopped on the way out.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    load = prepare_workload(args, work)
    result: dict[str, Any] = {"model": str(args.model or "tiny-medgemma (built)")}
    token = secrets.token_urlsafe(16)  # adapter uploads need the server's key
    async with contextlib.AsyncExitStack() as stack:
        base_config = load.server_config(load.model_dir, work / "server-base" / "adapters")
        base_server = stack.enter_context(ServerProcess(base_config, work / "server-base", token=token))
        direct = DirectEnginePath(load.engine, load.sampling)
        stack.push_async_callback(direct.shutdown)
        starting = [asyncio.to_thread(base_server.wait_ready), direct.start()]
        if not args.skip_openai:  # both OpenAI servers up at once, from the start
            vllm_server = stack.enter_context(VllmServer(load.engine, work / "server-vllm"))
            starting.append(asyncio.to_thread(vllm_server.wait_ready))
        await asyncio.gather(*starting)
        client = await stack.enter_async_context(AsyncRolloutClient(base_server.url, token, timeout_s=1800))
        paths: list[Any] = [
            direct,
            HttpPath("http", client, base_server.process.pid, load.sampling, args.items_per_request),
        ]
        if not args.skip_hf:
            paths.append(TransformersPath(load.model_dir, load.sampling, args.torch_threads))
        runs = await measure(paths, load.sets, load.warmup, "throughput")
        await direct.shutdown()
        paths.clear()  # frees the transformers model
        result["throughput"] = by_batch(runs, "vllm direct")
        result["http_direct_same_samples"] = same_samples(runs["http"], runs["vllm direct"])
        print_throughput("Throughput (median over repeats)", result["throughput"], "vllm direct")
        if not args.skip_openai:
            s = load.sampling
            chat = ChatLoad(
                args.openai_requests, s.n, s.max_tokens, s.temperature, s.top_p, str(load.model_dir)
            )
            result["openai"] = await openai_comparison(
                base_server.url,
                vllm_server.url,
                chat,
                work,
                args.openai_rounds,
                args.seed,
                args.image_size,
                token,
            )
            vllm_server.stop()
        if args.skip_swaps and args.skip_merged:
            return result

        print("\npreparing two random LoRA adapters (rank 16)", file=sys.stderr)
        policy = random_lora_model(load.model_dir, seed=args.seed + 2)
        update_b = adapter_update(policy, "policy", "bench", version=None)
        randomise_lora(policy, seed=args.seed + 1)  # one base model in memory, however big
        update_a = adapter_update(policy, "policy", "bench", version=None)
        swaps = 0 if args.skip_swaps else args.swaps + 2
        # Alternating, so that every swap changes the weights (the canary checks it); A comes last,
        # as the adapter served against its merged weights below.
        sequence = [update_a if (swaps - index) % 2 else update_b for index in range(swaps)] or [update_a]
        result["swap"] = await measure_swaps(client, base_server.url, sequence, untimed=min(2, len(sequence)))
        if not args.skip_swaps:
            swap = result["swap"]
            print(
                f"\nAdapter swap (POST /v1/adapters with bytes, canary included), {args.swaps} swaps: "
                f"p50 {swap['swap_ms_p50']:.1f} ms, p95 {swap['swap_ms_p95']:.1f} ms "
                f"(server-side mean {swap['swap_server_ms_mean']:.1f} ms)"
            )
        if args.skip_merged:
            return result

        merged_dir = save_merged_model(policy, load.model_dir, work / "merged")
        merged_config = load.server_config(merged_dir, work / "server-merged" / "adapters")
        merged_server = stack.enter_context(ServerProcess(merged_config, work / "server-merged", token=token))
        await asyncio.to_thread(merged_server.wait_ready)
        merged_client = await stack.enter_async_context(
            AsyncRolloutClient(merged_server.url, token, timeout_s=1800)
        )
        lora_paths = [
            HttpPath(
                "http lora", client, base_server.process.pid, load.sampling, args.items_per_request,
                AdapterSelector(name="bench"),
            ),
            HttpPath(
                "http merged", merged_client, merged_server.process.pid, load.sampling, args.items_per_request,
            ),
        ]  # fmt: skip
        lora_runs = await measure(lora_paths, load.sets, load.warmup, "lora vs merged")
        result["lora_throughput"] = by_batch(lora_runs, "http merged")
        result["lora_merged_same_samples"] = same_samples(lora_runs["http lora"], lora_runs["http merged"])
        print_throughput(
            "LoRA adapter versus the same weights merged (HTTP)", result["lora_throughput"], "http merged"
        )
    return result


def headline(result: dict[str, Any], batch: int) -> dict[str, Any]:
    """The figures of the biggest batch, flat, under the names the project's reports use."""
    figures = result["throughput"][str(batch)]
    direct, http = figures["vllm direct"], figures["http"]
    line: dict[str, Any] = {
        "http_tokens_per_s": http["tokens_per_s"],
        "direct_tokens_per_s": direct["tokens_per_s"],
        "http_over_direct": http["vs_reference"],
        "http_completions_per_s": http["completions_per_s"],
        "direct_completions_per_s": direct["completions_per_s"],
        "http_layer_cpu_ms": round(http["front_cpu_ms"] - direct["front_cpu_ms"], 1),
        "http_outside_engine_share": http["outside_engine_share"],
    }
    if "transformers" in figures:
        line["hf_tokens_per_s"] = figures["transformers"]["tokens_per_s"]
        line["hf_completions_per_s"] = figures["transformers"]["completions_per_s"]
        line["hf_over_direct"] = figures["transformers"]["vs_reference"]
    if "openai" in result:
        line.update({k: v for k, v in result["openai"].items() if not k.endswith("_per_round")})
    if "lora_throughput" in result:
        lora = result["lora_throughput"][str(batch)]
        line["lora_tokens_per_s"] = lora["http lora"]["tokens_per_s"]
        line["merged_tokens_per_s"] = lora["http merged"]["tokens_per_s"]
        line["lora_over_merged"] = lora["http lora"]["vs_reference"]
    return line


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from shared.errors import UserError

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="cxr-rl-bench-rollout-"))
    work.mkdir(parents=True, exist_ok=True)
    load_before, started = os.getloadavg()[0], time.perf_counter()
    try:
        result = asyncio.run(benchmark(args, work))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; the servers and engines it started are stopped", file=sys.stderr)
        return 130
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    batch = max(args.batch_sizes)
    line = {
        **headline(result, batch),
        **result.pop("swap", {}),
        "headline_batch": batch,
        **{
            key: getattr(args, key)
            for key in ("n", "max_tokens", "batch_sizes", "repeats", "items_per_request", "cpu_lora_ops")
        },
        "cpu_cores": os.cpu_count(),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "wall_s": round(time.perf_counter() - started, 1),
        **result,
    }
    swap = f"{line['swap_ms_p50']:.1f} ms" if "swap_ms_p50" in line else "not measured"
    openai = f"{line['openai_over_vllm']:.3f}" if "openai_over_vllm" in line else "not measured"
    print(
        f"\nBatch of {batch}: HTTP/direct tokens/s {line['http_over_direct']:.2f} (target >= 0.85), "
        f"HTTP layer {line['http_layer_cpu_ms']:.0f} ms CPU per batch; swap p50 {swap} (target < 100 ms); "
        f"OpenAI endpoint / vLLM's OpenAI server {openai} (target >= 0.95)"
    )
    print(json.dumps(line))
    return 0


if __name__ == "__main__":  # vLLM's engine spawns processes: build it only here
    sys.exit(main())
