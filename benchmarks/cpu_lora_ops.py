"""vLLM 0.32's CPU LoRA ops against ours (`rollout_server.cpu_lora`), op by op, on the CPU.

One LoRA projection as the engine runs it in a prefill step: shrink (tokens x hidden -> rank, by
LoRA A) then expand (rank -> out, by LoRA B, added to the layer's output), with every token on one
adapter (a GRPO batch), at the tiny MedGemma's width and at MedGemma-4B's. Both give the same
numbers (checked here too); the table says how long each takes and how much memory vLLM's gather
of per-token weights takes.

    python benchmarks/cpu_lora_ops.py --help

The last line printed is one JSON object of the figures.
"""

import argparse
import functools
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the project root first on the import path
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch

SHAPES = {"tiny-medgemma": (128, 256), "medgemma-4b": (2560, 10240)}  # (hidden, MLP width): gate_proj in, out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1024, help="tokens in the step (default 1024)")
    parser.add_argument(
        "--rank", type=int, default=16, help="LoRA rank (default 16, the server's max_lora_rank)"
    )
    parser.add_argument(
        "--slots", type=int, default=4, help="adapter slots (default 4, the server's max_loras)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed calls per op, after one warm-up; the best is reported (default 5)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args(argv)
    if min(args.tokens, args.rank, args.slots, args.repeats, args.threads) < 1:
        parser.error("--tokens, --rank, --slots, --repeats and --threads must be at least 1")
    return args


def projection(ops, x, a, b, indices) -> torch.Tensor:
    """Shrink then expand, as vLLM's CPU punica wrapper calls the prefill ops."""
    tokens = x.shape[0]
    starts, lengths = torch.tensor([0]), torch.tensor([tokens])
    meta = (starts, lengths, indices, 1, tokens, tokens)
    middle = torch.zeros(tokens, a.shape[2])
    ops.sgmv_shrink(x, a, middle, *meta, 1.0)
    out = torch.zeros(tokens, b.shape[2])
    ops.sgmv_expand(middle, b, out, *meta, True)
    return out


def seconds(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)  # the best of the repeats: what the op costs when the machine's other work lets it run


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    # vLLM's ops are plain torch; importing them loads vLLM (seconds), so only here
    import vllm.lora.ops.torch_ops.lora_ops as vllm_ops

    from rollout_server import cpu_lora

    generator = torch.Generator().manual_seed(0)
    line: dict[str, object] = {"tokens": args.tokens, "rank": args.rank, "threads": args.threads}
    print(f"one LoRA projection (shrink + expand), {args.tokens} tokens on one adapter, rank {args.rank}")
    print(f"{'model':<15}{'in':>6}{'out':>7}{'vLLM ms':>10}{'ours ms':>10}{'ratio':>8}{'gather MB':>11}")
    for name, (hidden, out) in SHAPES.items():
        x = torch.randn(args.tokens, hidden, generator=generator)
        a = torch.randn(args.slots, 1, args.rank, hidden, generator=generator) / hidden**0.5
        b = torch.randn(args.slots, 1, out, args.rank, generator=generator)
        inputs = (x, a, b, torch.tensor([1]))  # every token on slot 1
        theirs = seconds(functools.partial(projection, vllm_ops, *inputs), args.repeats)
        ours = seconds(functools.partial(projection, cpu_lora, *inputs), args.repeats)
        same = torch.allclose(projection(vllm_ops, *inputs), projection(cpu_lora, *inputs), atol=1e-4)
        gather_mb = args.tokens * args.rank * (hidden + out) * 4 / 1e6  # A and B copied per token, float32
        print(
            f"{name:<15}{hidden:>6}{out:>7}{theirs * 1e3:>10.2f}{ours * 1e3:>10.2f}{theirs / ours:>8.1f}{gather_mb:>11.0f}"
        )
        line[name] = {
            "vllm_ms": round(theirs * 1e3, 3), "ours_ms": round(ours * 1e3, 3),
            "vllm_over_ours": round(theirs / ours, 2), "vllm_gather_mb": round(gather_mb, 1), "same": same,
        }  # fmt: skip
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
