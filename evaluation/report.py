"""Several checkpoints on any number of datasets in one report: per-label F1 tables laid out like
the paper's Tables 5 and 6, and a generalization summary (mean macro-F1 over the in- and over the
out-of-distribution sets per checkpoint, with the change from a baseline checkpoint and bootstrap
intervals; see evaluation/generalization.py).

`build_report` computes; `write_report` (evaluation/report_files.py) writes markdown, JSON, PNG charts
and the predictions JSONL behind every number."""

from collections import Counter
from pathlib import Path

from pydantic import BaseModel
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
from evaluation.records import CheckpointRecords
from evaluation.report_config import ReportConfig
from shared.errors import UserError


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
