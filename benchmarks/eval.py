"""Evaluation throughput through the rollout server: images per second of `evaluate_checkpoints`
(the code path of `cxr-rl eval` and of the GRPO driver's periodic evaluation), greedy, side by side
for several request shapes (images per request x requests in flight).

    python benchmarks/eval.py --help

Starts `cxr-rl serve` on the tiny MedGemma (or uses --server) and draws phantom X-rays. Every run
gets images no other run has sent, so vLLM's prefix cache never carries one run's work into
another; the settings take turns (their order rotated per repeat) so drift in the machine's load
falls on all of them alike. The last line printed is one JSON object of the figures.
"""

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run as a file, this folder would come first on the import path and its neighbours
# (benchmarks/rewards.py) would shadow the project's packages: put the project root there instead.
if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def shapes(text: str) -> list[tuple[int, int]]:
        try:
            pairs = [tuple(int(v) for v in part.split("x")) for part in text.split(",") if part.strip()]
        except ValueError:
            pairs = []
        if not pairs or any(len(p) != 2 or min(p) < 1 for p in pairs):
            raise argparse.ArgumentTypeError(f"expected BATCHxCONCURRENCY,... e.g. 1x1,8x4; got {text!r}")
        return pairs

    parser = argparse.ArgumentParser(
        prog="python benchmarks/eval.py",
        description="Images per second of evaluation through the rollout server (greedy), for several "
        "request shapes. Prints a table, then one JSON line.",
    )
    parser.add_argument("--server", help="an already running rollout server (default: start one)")
    parser.add_argument("--token", help="that server's bearer token")
    parser.add_argument(
        "--model", type=Path, help="model for the started server (default: build the tiny MedGemma)"
    )
    parser.add_argument(
        "--work-dir", type=Path, help="folder for the model, phantoms and logs (default: temporary, deleted)"
    )
    parser.add_argument(
        "--settings",
        type=shapes,
        default=[(1, 4), (8, 1), (8, 4), (32, 1)],
        help="request shapes, images per request x requests in flight (default 1x4,8x1,8x4,32x1)",
    )
    parser.add_argument("--images", type=int, default=32, help="images per run (default 32)")
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs per setting; the median counts (default 2)"
    )
    parser.add_argument(
        "--max-tokens", type=int, default=256, help="most tokens per answer (default 256, a short report)"
    )
    parser.add_argument("--size", type=int, default=512, help="phantom film size in pixels (default 512)")
    args = parser.parse_args(argv)
    if args.images < 1 or args.repeats < 1 or args.max_tokens < 1:
        parser.error("--images, --repeats and --max-tokens must be at least 1")
    return args


def phantom_records(work: Path, count: int, size: int) -> list[Any]:
    """At least `count` distinct phantom images as manifest records with absolute paths (the
    MIMIC-, CheXpert- and NIH-style copies of a study differ in every byte)."""
    from dataprep.phantoms.datasets import make_phantoms
    from shared.manifest import read_manifest

    studies = max(4, count // 3)
    while True:
        root = work / f"phantoms-{studies}"
        if not (root / "phantoms.json").is_file():
            make_phantoms(root, n=studies, seed=0, size=size)
        records = []
        for manifest in sorted((root / "manifests").glob("*.jsonl")):
            for record in read_manifest(manifest):
                image = str(record.image_path(manifest.parent).resolve())
                records.append(record.model_copy(update={"image": image, "source": "phantom"}))
        if len(records) >= count:
            return records[:count]
        studies *= 2


def run_once(client: Any, manifest: Path, batch: int, concurrency: int, max_tokens: int) -> dict[str, float]:
    from evaluation.runner import EvalSampling, EvalSettings, evaluate_checkpoints

    settings = EvalSettings(
        sampling=EvalSampling(max_tokens=max_tokens),
        batch_size=batch,
        concurrency=concurrency,
        progress=False,
    )
    timing = evaluate_checkpoints(client, {"phantoms": (manifest, "chexpert14")}, [None], settings).timing
    return timing.model_dump()


def benchmark(client: Any, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from shared.manifest import write_manifest

    runs = len(args.settings) * args.repeats
    records = phantom_records(work, args.images * (runs + 1), args.size)
    chunks = [records[i * args.images : (i + 1) * args.images] for i in range(runs + 1)]
    manifests = [write_manifest(chunk, work / "runs" / f"run-{i}.jsonl") for i, chunk in enumerate(chunks)]
    run_once(client, manifests[0], 8, 4, args.max_tokens)  # warm-up: first-request costs, thread pools
    results: dict[tuple[int, int], list[dict[str, float]]] = {shape: [] for shape in args.settings}
    next_manifest = iter(manifests[1:])
    for repeat in range(args.repeats):
        order = args.settings[repeat % len(args.settings) :] + args.settings[: repeat % len(args.settings)]
        for batch, concurrency in order:
            timing = run_once(client, next(next_manifest), batch, concurrency, args.max_tokens)
            results[(batch, concurrency)].append(timing)
            print(
                f"  {batch}x{concurrency} repeat {repeat}: {timing['images_per_s']:.2f} images/s",
                file=sys.stderr,
            )
    rows = []
    for (batch, concurrency), timings in results.items():
        rows.append(
            {
                "batch_size": batch,
                "concurrency": concurrency,
                "images_per_s": statistics.median(t["images_per_s"] for t in timings),
                "tokens_per_s": statistics.median(t["tokens_per_s"] for t in timings),
                "tokens_per_answer": statistics.mean(t["completion_tokens"] / t["images"] for t in timings),
                "seconds": [round(t["seconds"], 3) for t in timings],
            }
        )
    return {"rows": rows}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from rollout_server.client import RolloutClient

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="cxr-rl-bench-eval-"))
    work.mkdir(parents=True, exist_ok=True)
    server = None
    try:
        if args.server:
            url, token, served = args.server, args.token, args.server
        else:
            from benchmarks.common import ServerProcess
            from tiny_models import build_tiny_model

            model = args.model or build_tiny_model("medgemma", work / "tiny-medgemma", seed=0)
            token = "bench-eval"
            config = {"engine": {"model": str(model), "max_model_len": 2048}, "limits": {"max_items": 64}}
            server = ServerProcess(config, work / "server", token=token)
            started = time.perf_counter()
            server.wait_ready()
            print(f"server ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            url, served = server.url, f"cxr-rl serve {Path(model).name}"
        with RolloutClient(url, token=token, timeout_s=900) as client:
            figures = benchmark(client, work, args)
    finally:
        if server is not None:
            server.stop()
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"evaluation through {served}: {args.images} images per run, greedy, max_tokens {args.max_tokens}")
    print(f"{'images/request x in flight':>28}  {'images/s':>9}  {'tokens/s':>9}  {'tokens/answer':>13}")
    for row in figures["rows"]:
        shape = f"{row['batch_size']}x{row['concurrency']}"
        print(
            f"{shape:>28}  {row['images_per_s']:9.2f}  {row['tokens_per_s']:9.1f}  {row['tokens_per_answer']:13.1f}"
        )
    best = max(figures["rows"], key=lambda row: row["images_per_s"])
    print(
        json.dumps(
            {
                "images_per_s": best["images_per_s"],
                "best_setting": f"{best['batch_size']}x{best['concurrency']}",
                "server": served,
                "images_per_run": args.images,
                "repeats": args.repeats,
                "max_tokens": args.max_tokens,
                "settings": figures["rows"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
