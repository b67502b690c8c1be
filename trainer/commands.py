"""`cxr-rl sft`: supervised fine-tuning of a LoRA adapter on SFT targets (GRPO's starting point)."""

import argparse


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


def run_sft(args: argparse.Namespace) -> int:
    from shared.config import load_config
    from shared.errors import UserError
    from trainer.sft import train_sft
    from trainer.sft_config import SftConfig

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
