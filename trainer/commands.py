"""`cxr-rl sft` (supervised fine-tuning of a LoRA adapter, GRPO's starting point) and `cxr-rl grpo`
(GRPO against running rollout servers, without the driver)."""

import argparse
import json
import os
from pathlib import Path

from shared.config import load_config
from shared.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    sft = subparsers.add_parser(
        "sft",
        help="supervised fine-tuning of a LoRA adapter (assistant-only loss, early stopping)",
        description=(
            "Fine-tune a LoRA adapter on a manifest of X-rays with target texts, with loss on the answer tokens "
            "only. The config's defaults are the paper's recipe (LoRA rank 16 on the language model, AdamW lr "
            "5e-5, cosine schedule, effective batch 8, up to 6 epochs, early stopping with patience 2). Writes "
            "the best epoch's adapter to OUT/adapter/, OUT/sft_summary.json, OUT/metrics.jsonl and an epoch "
            "checkpoint for --resume."
        ),
    )
    sft.add_argument(
        "--config",
        required=True,
        metavar="FILE",
        help="YAML SFT config: model, data.train_manifest, data.sft_format and optional lora/training "
        "settings (see deploy/configs/sft_medgemma.yaml)",
    )
    sft.add_argument("--out", metavar="DIR", help="output folder (overrides the config's 'out')")
    sft.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in the output folder from its last finished epoch (same config required)",
    )
    sft.set_defaults(run=run_sft)
    add_grpo_parser(subparsers)


def add_grpo_parser(subparsers: argparse._SubParsersAction) -> None:
    grpo = subparsers.add_parser(
        "grpo",
        help="GRPO against running rollout servers (normally started by `cxr-rl train`)",
        description=(
            "Run GRPO from a config against rollout servers already serving the base model (`cxr-rl serve`). "
            "Each step samples G completions per X-ray from version k of the adapter, scores them, takes one "
            "optimizer step and publishes version k+1 to every server over HTTP. The reward runs in this "
            "process, or at an HTTP reward service when reward.spec is a URL. Most users run `cxr-rl train`, "
            "which places all of this on a Ray cluster."
        ),
    )
    grpo.add_argument(
        "--config", required=True, metavar="FILE", help="YAML GRPO config (trainer/grpo/config.py)"
    )
    grpo.add_argument(
        "--server", action="append", required=True, metavar="URL", help="rollout server URL (repeat)"
    )
    grpo.add_argument("--token", help="bearer token of the rollout servers (or env CXR_RL_API_KEY)")
    grpo.add_argument("--out", required=True, metavar="DIR", help="run folder: checkpoints, metrics.jsonl")
    grpo.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    grpo.set_defaults(run=run_grpo)


def run_grpo(args: argparse.Namespace) -> int:
    # loaded when the command runs, so that `cxr-rl --help` stays fast
    from tqdm import tqdm

    from rewards.client import RewardClient
    from rewards.registry import load_reward
    from rollout_server.client import RolloutClient
    from trainer.grpo.config import GrpoConfig
    from trainer.grpo.trainer import GrpoTrainer
    from trainer.rollouts import RolloutDispatcher
    from trainer.sync import HttpAdapterPublisher

    config = load_config(args.config, GrpoConfig)
    token = args.token or os.environ.get("CXR_RL_API_KEY") or os.environ.get("CXR_RL_API_TOKEN")
    spec = config.reward.spec
    rewards = (
        RewardClient.for_url(spec)
        if spec.startswith(("http://", "https://"))
        else RewardClient.in_process(load_reward(spec, config.reward.config))
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    publisher = HttpAdapterPublisher([RolloutClient(url, token=token) for url in args.server])
    trainer = GrpoTrainer(config, out, RolloutDispatcher(args.server, token=token), publisher, rewards)
    trainer.setup(resume=args.resume)
    with (
        (out / "metrics.jsonl").open("a") as log,
        tqdm(total=config.max_steps, initial=trainer.step_count, desc="GRPO") as bar,
    ):

        def record(metrics: dict) -> None:
            log.write(json.dumps(metrics, default=str) + "\n")
            log.flush()
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}", kl=f"{metrics['kl']:.3g}")

        trainer.train(on_step=record)
    print(f"grpo: {trainer.step_count} steps; adapter checkpoints in {out / 'checkpoints'}")
    return 0


def run_sft(args: argparse.Namespace) -> int:
    # loaded when the command runs, so that `cxr-rl --help` stays fast
    from trainer.sft.config import SftConfig
    from trainer.sft.training import train_sft

    config = load_config(args.config, SftConfig)
    out = args.out or config.out
    if out is None:
        raise UserError("no output folder: pass --out DIR or set 'out' in the config")
    result = train_sft(config, out, resume=args.resume)
    print(
        f"sft: {result.stop_reason} after {result.epochs_run} epochs ({result.steps} steps); best epoch "
        f"{result.best_epoch} with validation loss {result.best_val_loss:.4f} (initially "
        f"{result.initial_val_loss:.4f}); adapter in {result.adapter}"
    )
    return 0
