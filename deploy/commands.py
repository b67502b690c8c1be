"""`cxr-rl train` (the driver) and `cxr-rl plan-memory`."""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from deploy.learned import learned_lines
from shared.config import describe_config, load_config
from shared.errors import UserError


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", help="run config YAML (default: the embedded demo, deploy/configs/default.yaml)"
    )
    parser.add_argument("--run-dir", help="folder for everything of this run (overrides run_dir)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint"
    )
    parser.add_argument(
        "--address", default="auto", help="Ray cluster address (default: auto, the running `ray start --head`; "
        "'local' starts a private one for this run: loopback only, token auth, stopped with the run)"
    )  # fmt: skip
    parser.add_argument("--grpo-steps", type=int, help="override grpo.max_steps")
    parser.add_argument(
        "--check",
        action="store_true",
        help="validate the config, print it resolved (defaults filled in, each option with its "
        "description) and exit without starting anything",
    )


def register(subcommands: argparse._SubParsersAction) -> None:
    train = subcommands.add_parser(
        "train",
        help="run the whole pipeline on a Ray cluster: SFT, GRPO with live adapter sync, evaluation",
        description=(
            "Connect to a running Ray cluster (`ray start --head`), place the rollout replica(s), the reward "
            "worker and the trainer as actors, run SFT then GRPO with evaluation every K steps, and write "
            "everything of the run (metrics, TensorBoard, plots, checkpoints, reports, summary.md) into its "
            "run folder. With no --config: the embedded demo (tiny MedGemma-architecture model and phantom "
            "X-rays on CPU, a few minutes). Ctrl-C or SIGTERM stops every process the run started and prints the "
            "step reached and the command that resumes the run."
        ),
    )
    add_train_arguments(train)
    train.set_defaults(run=run_train)
    add_plan_memory_parser(subcommands)


def add_plan_memory_parser(subcommands: argparse._SubParsersAction) -> None:
    plan = subcommands.add_parser(
        "plan-memory",
        help="itemise the GPU memory a run config needs and refuse one that does not fit",
        description=(
            "Budget the GPU of a run config's gpu: section, shared by the rollout server (vLLM) and the trainer: "
            "base weights, LoRA slots, KV cache, activation peaks (GRPO step and SFT step), CUDA context and "
            "margins, each against its share (vLLM: gpu.rollout_share x GPU memory; trainer: the rest, as its "
            "memory cap). Prints a table, the numbers the run derives from the budget (vLLM's "
            "gpu_memory_utilization, Ray's GPU fractions, the trainer's cap) and, last, one JSON line of totals; "
            "exits 1 with the numbers when a process does not fit."
        ),
    )
    plan.add_argument(
        "--config",
        required=True,
        help="run config YAML, or the name of a shipped one (e.g. medgemma-4b-a100)",
    )
    plan.add_argument(
        "--gpu",
        help="plan the config on another GPU than its gpu.kind: a100-80gb, a100-40gb, h100-80gb, h200-141gb, "
        "l40s-48gb or a10g-24gb",
    )
    plan.add_argument(
        "--arch",
        choices=("medgemma-4b", "qwen2.5-vl-3b"),
        help="architecture to plan for (default: read the model folder's config.json, else the model's name)",
    )
    plan.add_argument(
        "--prompt-tokens",
        type=int,
        help="prompt length incl. image tokens (default: estimated from the format)",
    )
    plan.add_argument(
        "--sft-target-tokens", type=int, help="longest SFT target in tokens (default: the GRPO max_tokens)"
    )
    plan.set_defaults(run=run_plan_memory)


def run_train(args: argparse.Namespace) -> int:
    # The driver imports Ray, the trainer's configs and the evaluator: only for `train`, so that
    # `cxr-rl --help` answers at once.
    from deploy.driver import load_run_config, train
    from deploy.interrupts import StopSignals, stopped_message

    overrides: dict[str, Any] = {}
    if args.run_dir:
        overrides["run_dir"] = args.run_dir
    if args.grpo_steps:
        overrides["grpo"] = {"max_steps": args.grpo_steps}
    config = load_run_config(args.config, overrides)  # the whole config is checked before any work
    if args.check:
        print("\n".join(describe_config(config)))
        split = config.gpu_split()
        if split is not None:
            print("\n".join(f"# from gpu: {line}" for line in split.describe()))
        return 0
    with StopSignals() as stop:
        try:
            run_dir = train(config, resume=args.resume, address=args.address)
        except KeyboardInterrupt:  # our RunStopped, or Ray's KeyboardInterrupt raised for it
            if stop.received is None:
                raise
            leave_ray()  # stopped before the actors were placed: nothing else to stop
            print(stopped_message(stop, config.run_dir, args), file=sys.stderr, flush=True)
            return stop.exit_status
    print_learned(run_dir)
    return 0


def print_learned(run_dir: Path) -> None:
    """The run's closing lines: what it learned, in plain words (deploy/learned.py), and where it is."""
    summary = json.loads((run_dir / "summary.json").read_text())
    print(f"\ncxr-rl train: finished in {summary['wall_s']:.0f} s; everything is in {run_dir}", flush=True)
    for line in learned_lines(summary):
        print(f"- {line}", flush=True)


def leave_ray() -> None:
    if "ray" in sys.modules:
        import ray  # already loaded (checked above): no start-up cost

        if ray.is_initialized():
            ray.shutdown()


def run_plan_memory(args: argparse.Namespace) -> int:
    # loaded when the command runs, so that `cxr-rl --help` stays fast
    from deploy.config import RunConfig
    from deploy.memory.plan import plan_memory
    from deploy.memory.report import format_plan, totals_json

    path = Path(args.config)
    shipped = Path(__file__).parent / "configs" / f"{args.config}.yaml"
    if not path.exists() and shipped.is_file():
        path = shipped
    for option in ("prompt_tokens", "sft_target_tokens"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            raise UserError(f"--{option.replace('_', '-')} must be at least 1")
    plan = plan_memory(
        load_config(path, RunConfig),
        args.gpu,
        arch=args.arch,
        prompt_tokens=args.prompt_tokens,
        sft_target_tokens=args.sft_target_tokens,
    )
    print(format_plan(plan))
    print(totals_json(plan), flush=True)
    overflow = plan.overflow_message()
    if overflow:
        raise UserError(overflow)
    return 0
