"""Writing a report: report.md, report.json, the PNG charts and predictions.jsonl (every number's
answers), each file atomically."""

import re
from pathlib import Path

from pydantic import BaseModel

from evaluation.records import CheckpointRecords, flatten_checkpoint_records, write_prediction_records
from evaluation.report import EvaluationReport
from evaluation.report_markdown import render_markdown
from shared.atomic_files import write_atomically


class ReportFiles(BaseModel):
    markdown: Path
    json_path: Path
    predictions: Path
    charts: list[Path]


def file_stem(name: str) -> str:
    """A dataset or checkpoint name made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "unnamed"


def write_report(report: EvaluationReport, records: CheckpointRecords, out_dir: str | Path) -> ReportFiles:
    """Write report.md, report.json, predictions.jsonl and the PNG charts into `out_dir`."""
    # matplotlib takes a second or two to import: only once charts are drawn
    from evaluation.report_charts import plot_generalization, plot_per_label_f1

    out_dir = Path(out_dir)
    charts = []
    datasets = list(report.config.datasets)
    for dataset in datasets:
        if any(report.result(checkpoint, dataset) for checkpoint in report.checkpoints):
            chart = out_dir / f"per_label_f1_{file_stem(dataset)}.png"
            charts.append(write_atomically(chart, plot_per_label_f1(report, dataset)))
    charts.append(write_atomically(out_dir / "id_vs_ood_macro_f1.png", plot_generalization(report)))
    predictions = write_prediction_records(flatten_checkpoint_records(records), out_dir / "predictions.jsonl")
    json_path = write_atomically(out_dir / "report.json", report.model_dump_json(indent=2))
    markdown = write_atomically(
        out_dir / "report.md", render_markdown(report, [chart.name for chart in charts])
    )
    return ReportFiles(markdown=markdown, json_path=json_path, predictions=predictions, charts=charts)
