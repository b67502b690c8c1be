"""`cxr-rl score` and `cxr-rl report`: metrics and reports recomputed from a predictions JSONL,
without a server."""

import argparse

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
    report.add_argument("--id", required=True, metavar="NAME", help="the in-distribution dataset")
    report.add_argument("--ood", metavar="NAME", help="the out-of-distribution dataset, if any")
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


def run_score(args: argparse.Namespace) -> int:
    import json

    from evaluation.records import read_scored_predictions
    from shared.errors import UserError

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
    from evaluation.records import group_by_checkpoint, read_prediction_records
    from evaluation.report import ReportConfig, build_report, write_report
    from shared.config import parse_config
    from shared.errors import UserError

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
