"""Does the demo's SFT read its phantom X-rays? The embedded default's data preparation, tiny model
and SFT settings (optionally changed from the command line), then the SFT adapter's greedy answers on
the ID validation phantoms against the best shortcut baseline (every label seen in training, labels
drawn at their training rates, its own answer on a blank image), with the paired bootstrap 95%
interval: the figure issue 15 asks the demo to lift above zero.

    python benchmarks/demo_sft.py --help

Deterministic for the seeds (one torch thread, greedy decoding, seeded bootstrap). The last line
printed is one JSON object of the figures.
"""

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

# Run as a file, this folder would come first on the import path and its neighbours
# (benchmarks/rewards.py) would shadow the project's packages: put the project root there instead.
if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

BLANK_SIZE = 512


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/demo_sft.py",
        description="The demo's SFT, then its greedy answers on held-out phantoms against the best shortcut "
        "baseline (macro-F1, paired bootstrap 95%%). Prints a table, then one JSON line.",
    )
    parser.add_argument("--n", type=int, help="phantom studies to draw (default: the demo config's, 2,400)")
    parser.add_argument("--scored", type=int, default=120, help="ID validation images scored (default 120)")
    parser.add_argument(
        "--max-steps", type=int, help="cap on SFT optimizer steps (default: the config's epochs)"
    )
    parser.add_argument("--lr", type=float, help="SFT learning rate (default: the demo config's)")
    parser.add_argument("--epochs", type=int, help="SFT epochs (default: the demo config's)")
    parser.add_argument(
        "--format",
        help="SFT output and prompt format (default: the demo config's), e.g. only_label, label_checklist",
    )
    parser.add_argument("--max-tokens", type=int, help="longest answer scored (default: the demo config's)")
    parser.add_argument(
        "--label-balance", type=float, help="SFT label_balance, 0 to 1 (default: the demo config's)"
    )
    parser.add_argument(
        "--heads", type=int, help="build the tiny MedGemma with this many query heads (default: its own, 8)"
    )
    parser.add_argument("--rank", type=int, help="LoRA rank (alpha twice it; default: the config's)")
    parser.add_argument(
        "--train-in-full",
        default="",
        help="a diagnostic: comma-separated base-model parts trained in full beside the LoRA, e.g. "
        "multi_modal_projector,language_model (what LoRA-only SFT cannot reach; not servable by vLLM)",
    )
    parser.add_argument("--model", type=Path, help="another model folder (default: the demo's tiny MedGemma)")
    parser.add_argument("--work-dir", type=Path, help="folder for the run (default: temporary)")
    return parser.parse_args(argv)


def sft_skill(
    run_dir: Path,
    overrides: dict,
    model: Path | None = None,
    scored: int = 120,
    train_in_full: tuple[str, ...] = (),
) -> dict:
    """Prepare the demo's inputs under `run_dir`, run its SFT with `overrides` (a nested dict over
    the default run config; `train_in_full` as SftConfig's) and score the adapter's greedy answers
    (with the parts trained in full loaded into the base); returns the figures."""
    # torch, transformers and the trainer take seconds to import: `--help` answers without them
    import torch

    from deploy.driver import load_run_config
    from deploy.embedded import prepare_model, prepare_phantom_data
    from evaluation.baselines import BlankImageAnswer, dataset_baselines, training_prevalence
    from evaluation.blank import blank_xray_png
    from evaluation.metrics import score_label_lists
    from evaluation.records import PredictionRecord
    from evaluation.skill import skill_over_shortcut
    from rewards.parsing import parse_completion
    from shared.images import decode_xray, load_xray
    from shared.manifest import read_manifest
    from trainer.sft.training import train_sft

    config = load_run_config(None, {"run_dir": str(run_dir), **overrides})
    inputs = prepare_phantom_data(config, config.run_dir)
    model = model or prepare_model(config, config.run_dir)
    sft_config = config.sft_config(str(model), inputs.sft_manifest, config.run_dir / "sft")
    sft_config = sft_config.model_copy(update={"progress": False, "train_in_full": train_in_full})
    started = time.perf_counter()
    summary = train_sft(sft_config, sft_config.out)
    sft_s = time.perf_counter() - started

    val = read_manifest(inputs.val_manifest)[:scored]
    images = [load_xray(record.image_path(inputs.val_manifest.parent)) for record in val]
    blank = decode_xray(blank_xray_png(BLANK_SIZE, BLANK_SIZE))
    with torch.no_grad():
        *texts, blank_text = greedy_answers(
            model,
            Path(summary.adapter),
            [*images, blank],
            config.grpo.prompt_format,
            config.evaluation.max_tokens,
        )
    records = []
    for record, text in zip(val, texts, strict=True):
        parsed = parse_completion(text)
        records.append(
            PredictionRecord(
                truth=record.labels, pred=parsed.labels, valid=parsed.valid, image_id=record.id, dataset="val",
                checkpoint="sft", text=text, parse_status="ok" if parsed.valid else "; ".join(parsed.problems),
            )
        )  # fmt: skip
    parsed_blank = parse_completion(blank_text)
    baselines = dataset_baselines(
        [record.labels for record in val],
        "chexpert14",
        training_prevalence([record.labels for record in read_manifest(inputs.rl_manifest)]),
        "the RL set",
        {"sft": BlankImageAnswer(text=blank_text, pred=parsed_blank.labels, valid=parsed_blank.valid,
                                 parse_status="ok", width=BLANK_SIZE, height=BLANK_SIZE)},
    )  # fmt: skip
    skill = skill_over_shortcut(records, "chexpert14", baselines, "sft")
    common = Counter(", ".join(record.pred) for record in records).most_common(1)[0]
    truths = [record.truth for record in records]
    seen = next(b.predicted_labels for b in baselines.prevalence if b.mode == "threshold")
    model_f1 = score_label_lists(truths, [r.pred for r in records], [r.valid for r in records], "chexpert14")
    seen_f1 = score_label_lists(truths, [list(seen)] * len(truths), [True] * len(truths), "chexpert14")
    return {
        "sft_records": summary.train_records,
        "sft_steps": summary.steps,
        "sft_s": round(sft_s, 1),
        "val_loss": [round(loss, 4) for loss in summary.val_loss],
        "scored_images": len(records),
        "macro_f1": skill.macro_f1,
        "best_shortcut": skill.best_shortcut,
        "shortcut_macro_f1": skill.shortcut_macro_f1,
        "skill": skill.skill,
        "skill_ci": skill.ci,
        "distinct_answer_sets": skill.distinct_answer_sets,
        "most_common_answer": common[0],
        "most_common_share": common[1] / len(records),
        "per_label": {  # label: [share of the scored images, SFT F1, every-seen-label F1]
            label: [
                round(sum(label in truth for truth in truths) / len(truths), 3),
                round(model_f1.per_label_f1[label], 3),
                round(seen_f1.per_label_f1[label], 3),
            ]
            for label in model_f1.per_label_f1
        },
    }


def greedy_answers(
    model_dir: Path, adapter: Path, images: list, prompt_format: str, max_tokens: int
) -> list[str]:
    """The adapter's greedy answer to each X-ray, with the prompt the rollout server would build."""
    # torch, peft and transformers take seconds to import: `--help` answers without them
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from shared.chat import render_prompt
    from shared.prompts import PromptRegistry, user_messages
    from trainer.sft.config import FULL_WEIGHTS_FILE

    processor = AutoProcessor.from_pretrained(model_dir)
    base = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    if (adapter / FULL_WEIGHTS_FILE).is_file():  # what SFT trained in full (--train-in-full)
        unexpected = base.load_state_dict(
            load_file(adapter / FULL_WEIGHTS_FILE), strict=False
        ).unexpected_keys
        if unexpected:
            raise RuntimeError(f"{FULL_WEIGHTS_FILE} does not fit the model: {unexpected[:3]}")
    model = PeftModel.from_pretrained(base, str(adapter)).eval()
    prompt = render_prompt(processor, user_messages(PromptRegistry().get(prompt_format)))
    answers = []
    for image in images:
        inputs = processor(text=[prompt], images=[image], return_tensors="pt")
        out = model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False)
        answers.append(
            processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        )
    return answers


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch  # seconds to import: `--help` answers without it

    torch.set_num_threads(1)  # deterministic reductions, and no spinning threads on a shared machine
    training = {
        key: value
        for key, value in (
            ("max_steps", args.max_steps),
            ("learning_rate", args.lr),
            ("epochs", args.epochs),
            ("label_balance", args.label_balance),
        )
        if value is not None
    }
    sft: dict = {"training": training}
    if args.rank:
        sft["lora"] = {"rank": args.rank, "alpha": 2 * args.rank}
    overrides: dict = {"data": {"phantoms": {"n": args.n}} if args.n else {}, "sft": sft}
    if args.format:
        overrides["data"]["sft_format"] = args.format
        overrides["grpo"] = {"prompt_format": args.format}
    if args.max_tokens:
        overrides["evaluation"] = {"max_tokens": args.max_tokens}
    with tempfile.TemporaryDirectory(prefix="cxr-rl-demo-sft-") as scratch:
        work = args.work_dir or Path(scratch)
        model = args.model
        if args.heads:
            from tiny_models.medgemma import build

            model = work / f"tiny-medgemma-{args.heads}-heads"
            build(model, seed=0, attention_heads=args.heads)
        train_in_full = tuple(part for part in args.train_in_full.split(",") if part)
        figures = sft_skill(work, overrides, model, args.scored, train_in_full)
    print(
        f"SFT: {figures['sft_records']} records, {figures['sft_steps']} steps in {figures['sft_s']} s; "
        f"val loss by epoch {figures['val_loss']}"
    )
    print(
        f"ID macro-F1 {figures['macro_f1']:.3f} vs {figures['best_shortcut']} {figures['shortcut_macro_f1']:.3f}: "
        f"skill {figures['skill']:+.3f} (95% CI {figures['skill_ci'][0]:.3f} to {figures['skill_ci'][1]:.3f}) "
        f"on {figures['scored_images']} images; {figures['distinct_answer_sets']} distinct answers, the commonest "
        f"({figures['most_common_answer']}) on {figures['most_common_share']:.0%}"
    )
    print(f"{'label':<28} {'share':>6} {'SFT F1':>7} {'every seen label F1':>20}")
    for label, (share, ours, seen) in figures["per_label"].items():
        print(f"{label:<28} {share:>6.1%} {ours:>7.3f} {seen:>20.3f}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
