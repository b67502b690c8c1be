"""Loading any of the three formats by name, and the `data summary` report: a table for people,
then one JSON line for scripts."""

import json
from pathlib import Path

from dataprep.chexpert import load_chexpert
from dataprep.loading import POLICY_REASONS, LoadOptions, LoadReport, LoadResult
from dataprep.mimic import load_mimic
from dataprep.nih import load_nih
from shared.errors import UserError

FORMATS = ("mimic", "chexpert", "nih")


def load_dataset(dataset_format: str, root: Path, options: LoadOptions | None = None) -> LoadResult:
    loaders = {"mimic": load_mimic, "chexpert": load_chexpert, "nih": load_nih}
    if dataset_format in loaders:
        return loaders[dataset_format](root, options)
    raise UserError(f"unknown dataset format {dataset_format!r}; choose one of {list(FORMATS)}")


def format_report(report: LoadReport) -> str:
    lines = [
        f"{report.source} copy at {report.root}",
        f"  label files: {', '.join(Path(file).name for file in report.files)}",
    ]
    lines.append(
        f"  usable images: {report.images}"
        + (
            f"  ({', '.join(f'{split} {count}' for split, count in report.splits.items())})"
            if report.splits
            else ""
        )
    )
    if report.skipped:
        lines.append("  skipped:")
        width = max(len(reason) for reason in report.skipped)
        for reason, count in report.skipped.items():
            kind = "by the options" if reason in {str(policy) for policy in POLICY_REASONS} else "malformed"
            lines.append(f"    {reason:<{width}}  {count:>8}  ({kind})")
            lines.extend(f"      e.g. {example}" for example in report.examples.get(reason, [])[:2])
    lines.append("  positives per label:")
    width = max(len(label) for label in report.prevalence)
    for label, count in report.prevalence.items():
        share = count / report.images if report.images else 0.0
        uncertain = report.uncertain.get(label, 0)
        lines.append(
            f"    {label:<{width}}  {count:>8}  {share:6.1%}"
            + (f"   ({uncertain} uncertain)" if uncertain else "")
        )
    lines.extend(f"  note: {note}" for note in report.notes)
    return "\n".join(lines)


def summary_json(report: LoadReport) -> str:
    """One line: `images`, `skipped` (reason -> count), `prevalence` (label -> positives), and more."""
    return json.dumps(
        {
            "format": report.source,
            "root": report.root,
            "images": report.images,
            "skipped": report.skipped,
            "prevalence": report.prevalence,
            "uncertain": report.uncertain,
            "splits": report.splits,
        }
    )
