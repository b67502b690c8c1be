"""`cxr-rl train` (the driver) and `cxr-rl plan-memory`."""

import argparse


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
        "'local' starts a private one inside this process)"
    )  # fmt: skip
    parser.add_argument("--grpo-steps", type=int, help="override grpo.max_steps")


def register(subcommands: argparse._SubParsersAction) -> None:
    train = subcommands.add_parser(
        "train",
        help="run the whole pipeline on a Ray cluster: SFT, GRPO with live adapter sync, evaluation",
        description=(
            "Connect to a running Ray cluster (`ray start --head`), place the rollout replica(s), the reward "
            "worker and the trainer as actors, run SFT then GRPO with evaluation every K steps, and write "
            "everything of the run (metrics, TensorBoard, plots, checkpoints, reports, summary.md) into its "
            "run folder. With no --config: the embedded demo (tiny MedGemma-architecture model and phantom "
            "X-rays on CPU, a few minutes)."
        ),
    )
    add_train_arguments(train)
    train.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    from deploy.driver import run_from_args

    return run_from_args(args)
