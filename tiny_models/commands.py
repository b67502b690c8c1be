"""`cxr-rl make-tiny-model`."""

import argparse


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "make-tiny-model",
        help="build a random-weight tiny model of a real architecture (offline, seconds)",
        description=(
            "Build a random-weight tiny model of MedGemma-4B's or Qwen2.5-VL-3B's architecture with its own "
            "tokenizer, processor and chat template, saved so both transformers and vLLM load it. "
            "medgemma-4b-shape has MedGemma-4B's real widths, 262k vocabulary, 896-px images and 256 image "
            "tokens with --layers text and vision layers (1.6 GB on disk with one layer, 0.22 GB more per layer). "
            "Deterministic for a seed; an existing model for the same arch, seed and layers is reused."
        ),
    )
    parser.add_argument(
        "--arch",
        required=True,
        help="medgemma (Gemma3ForConditionalGeneration), qwen2.5-vl, or medgemma-4b-shape (real widths)",
    )
    parser.add_argument(
        "--layers",
        type=int,
        help="medgemma-4b-shape only: text and vision layers (default 1; the real model: 34)",
    )
    parser.add_argument("--out", required=True, help="folder to write the model to")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed (default 0)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # loaded when the command runs, so that `cxr-rl --help` stays fast
    from tiny_models import build_tiny_model

    path = build_tiny_model(args.arch, args.out, seed=args.seed, layers=args.layers)
    size = sum(file.stat().st_size for file in path.iterdir() if file.is_file())
    print(f"tiny {args.arch} model in {path} ({size / 1e6:.1f} MB)")
    return 0
