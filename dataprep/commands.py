"""`cxr-rl make-phantoms`, `cxr-rl data summary` and `cxr-rl data split`. Heavy modules are
imported inside each command so `cxr-rl --help` stays instant."""

import argparse
import json
from pathlib import Path

from shared.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    phantoms = subparsers.add_parser(
        "make-phantoms",
        help="write a synthetic chest X-ray set in MIMIC-CXR-JPG, CheXpert and NIH formats",
        description="Write N synthetic chest X-ray studies whose findings are visible, with label combinations "
        "drawn from real CheXpert co-occurrence, as MIMIC-CXR-JPG, CheXpert and NIH ChestX-ray14 copies plus "
        "JSONL manifests and the ground truth (phantom_truth.jsonl).",
    )
    phantoms.add_argument("--out", type=Path, required=True, help="folder to write into (created if missing)")
    phantoms.add_argument(
        "--n", type=int, required=True, help="number of studies (patients have 1-4 studies)"
    )
    phantoms.add_argument(
        "--seed", type=int, default=0, help="random seed; the same seed gives the same files (default 0)"
    )
    phantoms.add_argument(
        "--size", type=int, default=256, help="image width and height in pixels (default 256)"
    )
    phantoms.add_argument(
        "--workers", type=int, default=None, help="drawing threads (default: one per core, at most 4)"
    )
    phantoms.set_defaults(run=run_make_phantoms)

    data = subparsers.add_parser(
        "data", help="inspect real dataset copies and draw the SFT / RL / validation split"
    )
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")

    summary = data_commands.add_parser(
        "summary",
        help="load a dataset copy and report usable images, skipped rows and label prevalence",
        description="Load a MIMIC-CXR-JPG, CheXpert or NIH ChestX-ray14 copy as the trainer would and print a table "
        "(images found, rows skipped by reason, positives per label); the last line is one JSON object.",
    )
    summary.add_argument(
        "--format",
        required=True,
        choices=("mimic", "chexpert", "nih"),
        help="which dataset layout --root holds",
    )
    summary.add_argument(
        "--root", type=Path, required=True, help="the dataset folder (where its CSV files are)"
    )
    summary.add_argument(
        "--strict", action="store_true", help="stop at the first malformed row instead of skipping it"
    )
    summary.add_argument(
        "--uncertain",
        choices=("zeros", "ones", "drop"),
        default="zeros",
        help="uncertain (-1) labels: zeros = negative (U-Zeros, default), ones = positive, drop = masked out",
    )
    summary.add_argument(
        "--views", default="PA,AP", help="comma-separated views to keep, best first (default PA,AP)"
    )
    summary.add_argument(
        "--all-images-per-study",
        action="store_true",
        help="MIMIC: keep every selected view, not one per study",
    )
    summary.add_argument(
        "--nih-categories",
        type=int,
        choices=(9, 10),
        default=9,
        help="NIH label mapping: 9 (paper) or 10 (adds Effusion)",
    )
    summary.add_argument(
        "--manifest", type=Path, help="also write the usable images as a JSONL manifest here"
    )
    summary.set_defaults(run=run_data_summary)

    split = data_commands.add_parser(
        "split",
        help="draw SFT / RL / validation manifests from MIMIC-CXR-JPG, and validation / test manifests "
        "from NIH or CheXpert",
        description="From a MIMIC-CXR-JPG copy (one frontal image per study, official train and validate "
        "splits): disjoint SFT, RL and validation sets, disjoint by patient and stratified so rare labels "
        "appear in every set, plus sft_reserve.jsonl (patients of no other set, to replace rejected traces) "
        "and mimic_test.jsonl (the official test split). From an NIH or CheXpert copy: an out-of-distribution "
        "validation split for checkpoint selection (<name>_val.jsonl), carved from outside the official test "
        "split and its patients, and that test split as a report set (<name>_test.jsonl). Studies with no "
        "label at all stay out and are counted in split_report.json.",
    )
    split.add_argument("--mimic-root", type=Path, help="the MIMIC-CXR-JPG folder")
    split.add_argument("--nih-root", type=Path, help="an NIH ChestX-ray14 folder (with test_list.txt)")
    split.add_argument(
        "--chexpert-root", type=Path, help="a CheXpert folder (train.csv, valid.csv, test*.csv)"
    )
    split.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder for the manifests and split_report.json",
    )
    split.add_argument(
        "--sft", type=int, default=2000, help="images in the SFT set (default 2000, as in the paper)"
    )
    split.add_argument(
        "--rl", type=int, default=1000, help="images in the RL set (default 1000, as in the paper)"
    )
    split.add_argument("--val", type=int, default=500, help="images in the validation set (default 500)")
    split.add_argument(
        "--external-val",
        type=int,
        default=500,
        help="images in each NIH / CheXpert validation split (default 500)",
    )
    split.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    split.add_argument(
        "--from-splits",
        default="train,validate",
        help="official MIMIC splits to draw from, comma-separated (default train,validate; test is kept for evaluation)",
    )
    split.add_argument(
        "--uncertain",
        choices=("zeros", "ones", "drop"),
        default="zeros",
        help="uncertain (-1) labels: zeros (default), ones or drop",
    )
    split.set_defaults(run=run_data_split)


def run_make_phantoms(args: argparse.Namespace) -> int:
    # loaded when the command runs, so that `cxr-rl --help` stays fast
    from dataprep.phantoms.datasets import make_phantoms

    summary = make_phantoms(args.out, n=args.n, seed=args.seed, size=args.size, workers=args.workers)
    images = ", ".join(f"{count} {name}" for name, count in summary.images.items())
    print(f"wrote {summary.n} phantom studies to {summary.out} in {summary.seconds:.1f} s ({images} images)")
    for name, count in summary.manifests.items():
        print(f"  manifests/{name}: {count} records")
    print(summary.model_dump_json())
    return 0


def run_data_summary(args: argparse.Namespace) -> int:
    # loaded when the command runs, so that `cxr-rl --help` stays fast
    from dataprep.loading import LoadOptions
    from dataprep.summary import format_report, load_dataset, summary_json
    from shared.manifest import write_manifest

    options = LoadOptions(
        uncertain=args.uncertain,
        strict=args.strict,
        views=tuple(view for view in args.views.split(",") if view.strip()),
        one_per_study=not args.all_images_per_study,
        nih_categories=args.nih_categories,
    )
    result = load_dataset(args.format, args.root, options)
    print(format_report(result.report))
    if args.manifest:
        write_manifest(result.records, args.manifest)
        print(f"manifest: {args.manifest} ({len(result.records)} records)")
    print(summary_json(result.report))
    return 0


def run_data_split(args: argparse.Namespace) -> int:
    # loaded when the command runs, so that `cxr-rl --help` stays fast
    from dataprep.split import SplitConfig, split_mimic, write_split_report
    from dataprep.split_external import split_external

    roots = {"mimic": args.mimic_root, "nih": args.nih_root, "chexpert": args.chexpert_root}
    if not any(roots.values()):
        raise UserError("name at least one copy: --mimic-root, --nih-root or --chexpert-root")
    if args.external_val < 1:
        raise UserError(f"--external-val must be at least 1, not {args.external_val}")
    reports = {}
    if args.mimic_root:
        config = SplitConfig(
            sft=args.sft,
            rl=args.rl,
            val=args.val,
            seed=args.seed,
            from_splits=tuple(split.strip() for split in args.from_splits.split(",") if split.strip()),
            uncertain=args.uncertain,
        )
        report = reports["mimic"] = split_mimic(args.mimic_root, args.out, config)
        for name, size in report.sizes.items():
            print(
                f"{name}: {size} images, {report.patients[name]} patients -> {args.out / (name + '.jsonl')}"
            )
        print(f"sft_reserve: {report.reserve} images; mimic_test: {report.test_images} images")
        print(f"left out: {report.excluded}")
    for source in ("nih", "chexpert"):
        if roots[source]:
            external = reports[source] = split_external(
                source, roots[source], args.out, args.external_val, args.seed, args.uncertain
            )
            for name in ("val", "test"):
                print(
                    f"{source}_{name}: {external.sizes[name]} images, {external.patients[name]} patients -> "
                    f"{args.out / f'{source}_{name}.jsonl'}"
                )
            print(f"{source} left out of validation: {external.excluded}; test split: {external.test_split}")
    write_split_report(args.out, reports)
    print(json.dumps({name: report.model_dump() for name, report in reports.items()}))
    return 0
