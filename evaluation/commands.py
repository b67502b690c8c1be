"""`cxr-rl eval`: checkpoints evaluated through a running rollout server, with a full report.
`cxr-rl score` and `cxr-rl report`: metrics and reports recomputed from a predictions JSONL,
without a server."""

import argparse
import json
import os
from pathlib import Path

from shared.config import parse_config
from shared.errors import UserError
from shared.labels import LABEL_SETS


def register(subparsers: argparse._SubParsersAction) -> None:
    score = subparsers.add_parser(
        "score",
        help="recompute all metrics from a predictions JSONL",
        description="Recompute per-label and averaged metrics from a predictions JSONL (no server needed). "
        "Prints a table and, as the last line, one JSON object.",
    )
    score.add_argument(
        "--predictions",
        required=True,
        metavar="FILE",
        help="JSONL, one image per line with at least 'truth' and 'pred' (lists of CheXpert label names) "
        "and 'valid' (bool: whether the completion parsed); other fields are ignored",
    )
    score.add_argument(
        "--labels",
        required=True,
        choices=list(LABEL_SETS),
        help="label set to score over; labels outside it are ignored (nih9: the 9 categories NIH shares with CheXpert)",
    )
    score.add_argument(
        "--valid-only",
        action="store_true",
        help="score only parseable completions (default: an invalid completion counts as predicting no label)",
    )
    score.add_argument(
        "--bootstrap",
        type=int,
        default=0,
        metavar="N",
        help="add 95%% bootstrap intervals for micro and macro F1 from N resamples of the images (default 0: none)",
    )
    score.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seed of the bootstrap resampling (default 0)"
    )
    score.set_defaults(run=run_score)

    report = subparsers.add_parser(
        "report",
        help="build a multi-checkpoint report (markdown, JSON, PNG) from a predictions JSONL",
        description="Build the per-label tables (one per dataset, one column per checkpoint), the in- vs "
        "out-of-distribution summary with bootstrap intervals, and charts, from a predictions JSONL whose "
        "lines are full prediction records (image_id, dataset, checkpoint, text, truth, pred, valid, parse_status).",
    )
    report.add_argument(
        "--predictions", required=True, metavar="FILE", help="predictions JSONL of full records"
    )
    report.add_argument("--out", required=True, metavar="DIR", help="folder to write the report into")
    report.add_argument(
        "--dataset",
        action="append",
        required=True,
        metavar="NAME=LABELS",
        help="a dataset and the label set it is scored on, e.g. chexpert=chexpert14 or nih=nih9; repeat per dataset",
    )
    report.add_argument(
        "--id", required=True, action="append", metavar="NAME", help="an in-distribution dataset; repeat"
    )
    report.add_argument(
        "--ood",
        action="append",
        default=[],
        metavar="NAME",
        help="an out-of-distribution dataset, if any; repeat",
    )
    report.add_argument(
        "--baseline",
        metavar="CHECKPOINT",
        help="checkpoint that changes are measured from (default: the first in the file)",
    )
    report.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        metavar="N",
        help="bootstrap resamples for intervals (default 1000)",
    )
    report.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seed of the bootstrap resampling (default 0)"
    )
    report.add_argument(
        "--valid-only",
        action="store_true",
        help="score only parseable completions (default: failures predict no label)",
    )
    report.set_defaults(run=run_report)
    register_eval(subparsers)


def register_eval(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate checkpoints through a rollout server and write a report",
        description="Send every image of each dataset to a running rollout server (`cxr-rl serve`) for each "
        "checkpoint (the base model and/or LoRA adapters), read the answers with the shared parser, and write "
        "a report (markdown, JSON, PNG charts) with predictions.jsonl beside it. Every report carries two "
        "shortcut baselines: predicting the training prevalence, and each checkpoint's answer on a blank image. "
        "Prints one summary JSON object as the last line.",
    )
    parser.add_argument(
        "--server", required=True, metavar="URL", help="the rollout server, e.g. http://host:8000"
    )
    parser.add_argument(
        "--dataset",
        action="append",
        required=True,
        metavar="NAME=MANIFEST",
        help="a dataset name and its JSONL manifest (e.g. chexpert=manifests/chexpert_valid.jsonl); repeat per dataset",
    )
    parser.add_argument(
        "--labels",
        action="append",
        default=[],
        metavar="NAME=SET",
        help=f"label set a dataset is scored on, one of {', '.join(LABEL_SETS)} (default: nih9 when the manifest's "
        "source is NIH, else chexpert14); repeat per dataset",
    )
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="NAME[:VERSION]",
        help="an adapter loaded on the server (without VERSION: the latest, pinned when the run starts); repeat",
    )
    parser.add_argument(
        "--load-adapter",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="send a PEFT adapter folder to the server as a new version of NAME, then evaluate it; repeat",
    )
    parser.add_argument(
        "--base",
        action="store_true",
        help="evaluate the base model too (the default when no adapter is named)",
    )
    parser.add_argument(
        "--id",
        action="append",
        default=[],
        metavar="NAME",
        help="an in-distribution dataset; repeat (default: the first --dataset not given as --ood)",
    )
    parser.add_argument(
        "--ood",
        action="append",
        metavar="NAME",
        help="an out-of-distribution dataset; repeat (default: the first other dataset scored on an NIH "
        "label set, e.g. CheXpert and NIH side by side: --ood chexpert --ood nih)",
    )
    parser.add_argument(
        "--baseline",
        metavar="CHECKPOINT",
        help="checkpoint that changes are measured from: base, NAME or NAME:VERSION (default: the first evaluated)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--greedy", action="store_true", help="greedy decoding, one answer per image (the default)"
    )
    mode.add_argument(
        "--sample", action="store_true", help="sample one answer per image (see --seed, --temperature)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="with --sample: image i uses seed S+i (default 0)"
    )
    parser.add_argument(
        "--temperature", type=float, default=1.0, metavar="T", help="with --sample (default 1.0)"
    )
    parser.add_argument("--top-p", type=float, default=1.0, metavar="P", help="with --sample (default 1.0)")
    parser.add_argument(
        "--prompt-format",
        default="reasoning_a",
        metavar="NAME",
        help="prompt format the server renders (default reasoning_a)",
    )
    parser.add_argument(
        "--max-tokens", type=int, default=512, metavar="N", help="most tokens per answer (default 512)"
    )
    parser.add_argument(
        "--parser",
        choices=["strict", "lenient"],
        default="strict",
        help="how answers are read: strict is the paper's contract (default), lenient forgives format slips",
    )
    parser.add_argument(
        "--train-manifest",
        metavar="FILE",
        help="training manifest whose label rates the prevalence baselines use (default: the in-distribution "
        "set's own rates, marked as optimistic in the report)",
    )
    parser.add_argument(
        "--out", default="eval-report", metavar="DIR", help="folder for the report (default eval-report)"
    )
    parser.add_argument(
        "--token", metavar="TOKEN", help="the server's bearer token (default: env CXR_RL_API_KEY)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=4, metavar="N", help="requests in flight at once (default 4)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=8, metavar="N", help="images per request (default 8)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="seconds to wait for one request (default 600)",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        metavar="N",
        help="bootstrap resamples for intervals (default 1000)",
    )
    parser.add_argument(
        "--bootstrap-seed",
        type=int,
        default=0,
        metavar="S",
        help="seed of the bootstrap resampling (default 0)",
    )
    parser.add_argument(
        "--valid-only",
        action="store_true",
        help="score only parseable answers (default: an unparseable answer counts as predicting no label)",
    )
    parser.set_defaults(run=run_eval)


def run_score(args: argparse.Namespace) -> int:
    # loaded when the command runs, so that `cxr-rl --help` stays fast
    from evaluation.records import read_scored_predictions

    if args.bootstrap < 0:
        raise UserError(f"--bootstrap must be 0 (none) or a number of resamples, not {args.bootstrap}")
    predictions = read_scored_predictions(args.predictions)
    # scikit-learn takes seconds to import: only once the input has been checked.
    from evaluation.bootstrap import bootstrap_f1
    from evaluation.metrics import label_matrices, score_matrices
    from evaluation.summary import score_summary, score_table

    matrices = label_matrices(predictions, args.labels, args.valid_only)
    scores = score_matrices(matrices)
    intervals = bootstrap_f1(matrices, args.bootstrap, args.seed) if args.bootstrap else None
    print(f"{args.predictions}: {args.labels}")
    print(score_table(scores))
    if intervals is not None:
        for name, ci in (("micro F1", intervals.micro_f1), ("macro F1", intervals.macro_f1)):
            print(
                f"{name} {ci.estimate:.3f}, 95% CI [{ci.low:.3f}, {ci.high:.3f}] ({args.bootstrap} resamples)"
            )
    print(json.dumps(score_summary(scores, intervals)))
    return 0


def run_report(args: argparse.Namespace) -> int:
    # loaded when the command runs, so that `cxr-rl --help` stays fast
    from evaluation.records import group_by_checkpoint, read_prediction_records
    from evaluation.report import build_report
    from evaluation.report_config import ReportConfig
    from evaluation.report_files import write_report

    datasets = {}
    for item in args.dataset:
        name, _, label_set_name = item.partition("=")
        if not name or not label_set_name:
            raise UserError(f"--dataset {item!r}: expected NAME=LABELS, e.g. nih=nih9")
        datasets[name] = label_set_name
    config = parse_config(
        {
            "datasets": datasets,
            "in_distribution": args.id,
            "out_of_distribution": args.ood,
            "baseline_checkpoint": args.baseline,
            "n_resamples": args.bootstrap,
            "seed": args.seed,
            "valid_only": args.valid_only,
        },
        ReportConfig,
        source="report options",
    )
    records = group_by_checkpoint(read_prediction_records(args.predictions))
    files = write_report(build_report(records, config), records, args.out)
    for path in [files.markdown, files.json_path, files.predictions, *files.charts]:
        print(path)
    return 0


def _pairs(items: list[str], option: str, example: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        name, _, value = item.partition("=")
        if not name or not value:
            raise UserError(f"{option} {item!r}: expected NAME=VALUE, e.g. {example}")
        if name in pairs:
            raise UserError(f"{option}: {name!r} given twice")
        pairs[name] = value
    return pairs


def run_eval(args: argparse.Namespace) -> int:
    manifests = _pairs(args.dataset, "--dataset", "nih=manifests/nih_test.jsonl")
    label_sets = _pairs(args.labels, "--labels", "nih=nih10")
    unknown = sorted(set(label_sets) - set(manifests))
    if unknown:
        raise UserError(f"--labels names dataset(s) {unknown} that no --dataset gives")
    if args.bootstrap < 1:
        raise UserError(f"--bootstrap must be at least 1, not {args.bootstrap}")
    loads = _pairs(args.load_adapter, "--load-adapter", "grpo=checkpoints/step-400")
    # loaded when the command runs, so that `cxr-rl --help` stays fast
    from evaluation.runner import (
        EvalSettings,
        checkpoint_name,
        evaluate_checkpoints,
        load_adapter_folder,
        match_checkpoint,
        parse_checkpoint,
    )
    from rollout_server.client import RolloutClient

    settings = parse_config(
        {
            "sampling": {
                "greedy": not args.sample,
                "temperature": args.temperature,
                "top_p": args.top_p,
                "seed": args.seed,
                "max_tokens": args.max_tokens,
                "prompt_format": args.prompt_format,
            },
            "parser": {"mode": args.parser},
            "batch_size": args.batch_size,
            "concurrency": args.concurrency,
            "in_distribution": args.id,
            "out_of_distribution": args.ood,
            "train_manifest": args.train_manifest,
            "timeout_s": args.timeout,
        },
        EvalSettings,
        source="eval options",
    )

    requested = [parse_checkpoint(text) for text in args.adapter]
    if requested and any(selector is None for selector in requested):
        raise UserError("--adapter base: use --base for the base model")
    include_base = args.base or not (requested or loads)
    token = args.token or os.environ.get("CXR_RL_API_KEY") or os.environ.get("CXR_RL_API_TOKEN")
    datasets = {name: (Path(manifest), label_sets.get(name)) for name, manifest in manifests.items()}
    with RolloutClient(args.server, token=token, timeout_s=settings.timeout_s) as client:
        for name, folder in loads.items():
            requested.append(load_adapter_folder(client, name, folder))
        checkpoints = ([None] if include_base else []) + requested
        if args.baseline:
            match_checkpoint(args.baseline, checkpoints)  # a typo fails before the run, not after
        outcome = evaluate_checkpoints(client, datasets, checkpoints, settings)
    evaluated = [parse_checkpoint(name) for name in outcome.checkpoints]
    report_config = outcome.report_config(
        baseline_checkpoint=checkpoint_name(match_checkpoint(args.baseline, evaluated))
        if args.baseline
        else None,
        n_resamples=args.bootstrap,
        seed=args.bootstrap_seed,
        valid_only=args.valid_only,
    )
    # loaded when the command runs, so that `cxr-rl --help` stays fast
    from evaluation.records import flatten_checkpoint_records, write_prediction_records
    from shared.atomic_files import write_atomically

    # The predictions first: should the report fail (e.g. --valid-only and nothing parsed), the
    # server's work is still on disk for `cxr-rl report`.
    write_prediction_records(
        flatten_checkpoint_records(outcome.records), Path(args.out) / "predictions.jsonl"
    )
    files = outcome.write_report(Path(args.out), report_config)

    run = {"server": args.server, "settings": json.loads(settings.model_dump_json()), **outcome.summary()}
    run_path = write_atomically(Path(args.out) / "run.json", json.dumps(run, indent=2) + "\n")
    for checkpoint, by_dataset in outcome.scores.items():
        for dataset, scores in by_dataset.items():
            blank = outcome.baselines[dataset].blank_images[checkpoint].scores
            print(
                f"{checkpoint:<24} {dataset:<16} macro-F1 {scores.macro_f1:.3f}  micro-F1 {scores.micro_f1:.3f}  "
                f"fail rate {scores.fail_rate:.3f}  (blank image macro-F1 {blank.macro_f1:.3f})"
            )
    for path in [files.markdown, files.json_path, files.predictions, run_path, *files.charts]:
        print(path)
    print(json.dumps(outcome.summary()))
    return 0
