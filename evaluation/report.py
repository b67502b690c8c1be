"""Several checkpoints on any number of datasets in one report: per-label F1 tables laid out like
the paper's Tables 5 and 6, and a generalization summary (mean macro-F1 over the in- and over the
out-of-distribution sets per checkpoint, with the change from a baseline checkpoint and bootstrap
intervals; see evaluation/generalization.py).

`build_report` computes; `write_report` writes markdown, JSON, PNG charts and the predictions JSONL
behind every number, each file atomically."""

import re
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator, model_validator
from tqdm import tqdm

from evaluation.baselines import DatasetBaselines
from evaluation.bootstrap import (
    F1Intervals,
    PairedDifference,
    bootstrap_f1,
    paired_bootstrap,
    paired_label_matrices,
)
from evaluation.generalization import GeneralizationRow, generalization_rows
from evaluation.metrics import LabelSetScores, label_matrices, score_matrices
from evaluation.records import CheckpointRecords, flatten_checkpoint_records, write_prediction_records
from shared.atomic_files import write_atomically
from shared.config import StrictModel
from shared.errors import UserError
from shared.labels import LABEL_SETS


class ReportConfig(StrictModel):
    datasets: dict[str, str] = Field(
        description='dataset name -> the label set it is scored on, e.g. {"nih": "nih9"}'
    )
    in_distribution: list[str] = Field(
        description="the datasets the generalization summary calls in-distribution"
    )
    out_of_distribution: list[str] = []
    baseline_checkpoint: str | None = Field(
        None, description="changes are relative to it; None: the first checkpoint"
    )
    n_resamples: Annotated[int, Field(ge=1)] = 1000
    seed: int = 0
    level: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.95
    valid_only: bool = False

    @field_validator("datasets")
    @classmethod
    def _known_label_sets(cls, datasets: dict[str, str]) -> dict[str, str]:
        if not datasets:
            raise ValueError("name at least one dataset")
        for dataset, name in datasets.items():
            if name not in LABEL_SETS:
                raise ValueError(
                    f"dataset {dataset!r}: unknown label set {name!r}; choose one of {sorted(LABEL_SETS)}"
                )
        return datasets

    @field_validator("in_distribution", "out_of_distribution", mode="before")
    @classmethod
    def _one_or_many(cls, names: Any) -> Any:
        if names is None:
            return []
        return [names] if isinstance(names, str) else names

    @model_validator(mode="after")
    def _roles_are_datasets(self) -> "ReportConfig":
        for role in ("in_distribution", "out_of_distribution"):
            for dataset in getattr(self, role):
                if dataset not in self.datasets:
                    raise ValueError(
                        f"{role}: {dataset!r} is not one of the datasets {sorted(self.datasets)}"
                    )
        both = sorted(set(self.in_distribution) & set(self.out_of_distribution))
        if both:
            raise ValueError(f"in_distribution and out_of_distribution are both {both[0]!r}")
        return self


class DatasetResult(BaseModel):
    scores: LabelSetScores
    intervals: F1Intervals
    versus_baseline: PairedDifference | None  # macro-F1 change from the baseline checkpoint


class EvaluationReport(BaseModel):
    config: ReportConfig
    baseline_checkpoint: str
    checkpoints: list[str]  # column order
    results: dict[str, dict[str, DatasetResult]]  # checkpoint -> dataset -> result
    generalization: list[GeneralizationRow]
    baselines: dict[str, DatasetBaselines] = {}  # dataset -> shortcut baselines, when they were run

    def result(self, checkpoint: str, dataset: str) -> DatasetResult | None:
        return self.results.get(checkpoint, {}).get(dataset)


class ReportFiles(BaseModel):
    markdown: Path
    json_path: Path
    predictions: Path
    charts: list[Path]


def build_report(
    records: CheckpointRecords,
    config: ReportConfig,
    baselines: dict[str, DatasetBaselines] | None = None,
) -> EvaluationReport:
    """Score every (checkpoint, dataset), bootstrap its F1s and compare it with the baseline
    checkpoint; `baselines` (dataset -> shortcut baselines) are carried into the report as given."""
    checkpoints = list(records)
    if not checkpoints:
        raise UserError("a report needs predictions from at least one checkpoint")
    baseline = config.baseline_checkpoint or checkpoints[0]
    if baseline not in records:
        raise UserError(f"baseline checkpoint {baseline!r} has no predictions; checkpoints: {checkpoints}")
    for checkpoint, datasets in records.items():
        unknown = sorted(set(datasets) - set(config.datasets))
        if unknown:
            raise UserError(
                f"checkpoint {checkpoint!r}: dataset(s) {unknown} have no label set; "
                f"configured datasets: {sorted(config.datasets)}"
            )
    unknown_baselines = sorted(set(baselines or {}) - set(config.datasets))
    if unknown_baselines:
        raise UserError(f"baselines for dataset(s) {unknown_baselines} that the report does not configure")
    pairs = [(checkpoint, dataset) for checkpoint in checkpoints for dataset in records[checkpoint]]
    for checkpoint, dataset in pairs:
        counts = Counter(record.image_id for record in records[checkpoint][dataset])
        repeated = sorted(image_id for image_id, count in counts.items() if count > 1)[:3]
        if repeated:
            raise UserError(
                f"checkpoint {checkpoint!r} on {dataset!r}: image(s) {repeated} appear more than once"
            )
    results: dict[str, dict[str, DatasetResult]] = {checkpoint: {} for checkpoint in checkpoints}
    for checkpoint, dataset in tqdm(pairs, desc="scoring", unit="set", leave=False):
        results[checkpoint][dataset] = _dataset_result(records, checkpoint, dataset, baseline, config)
    generalization = generalization_rows(records, config, baseline)
    return EvaluationReport(
        config=config,
        baseline_checkpoint=baseline,
        checkpoints=checkpoints,
        results=results,
        generalization=generalization,
        baselines=baselines or {},
    )


def _dataset_result(
    records: CheckpointRecords, checkpoint: str, dataset: str, baseline: str, config: ReportConfig
) -> DatasetResult:
    label_set_name = config.datasets[dataset]
    matrices = label_matrices(records[checkpoint][dataset], label_set_name, config.valid_only)
    scores = score_matrices(matrices)
    if scores.n_scored == 0:
        raise UserError(f"checkpoint {checkpoint!r} on {dataset!r}: no valid completion to score")
    versus_baseline = None
    baseline_records = records[baseline].get(dataset)
    if checkpoint != baseline and baseline_records is not None:
        base_matrices, candidate_matrices = paired_label_matrices(
            baseline_records, records[checkpoint][dataset], label_set_name, config.valid_only
        )
        versus_baseline = paired_bootstrap(
            base_matrices, candidate_matrices, "macro_f1", config.n_resamples, config.seed, config.level
        )
    return DatasetResult(
        scores=scores,
        intervals=bootstrap_f1(matrices, config.n_resamples, config.seed, config.level),
        versus_baseline=versus_baseline,
    )


def read_report(path: str | Path) -> EvaluationReport:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"report not found: {path}")
    return EvaluationReport.model_validate_json(path.read_text())


def file_stem(name: str) -> str:
    """A dataset or checkpoint name made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "unnamed"


def write_report(report: EvaluationReport, records: CheckpointRecords, out_dir: str | Path) -> ReportFiles:
    """Write report.md, report.json, predictions.jsonl and the PNG charts into `out_dir`."""
    from evaluation.report_charts import plot_generalization, plot_per_label_f1
    from evaluation.report_markdown import render_markdown

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
