"""What an evaluation through the rollout server gives back: every prediction, each checkpoint's
scores per dataset, the shortcut baselines and the throughput. Enough for the GRPO driver's ID and
OOD macro-F1 per checkpoint, and for a full report (bootstrap intervals are computed only then)."""

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from evaluation.baselines import DatasetBaselines
from evaluation.metrics import LabelSetScores, score_predictions
from evaluation.records import CheckpointRecords
from evaluation.report import EvaluationReport, build_report
from evaluation.report_config import ReportConfig
from evaluation.report_files import ReportFiles, write_report
from evaluation.selection import ValidationPoint
from shared.errors import UserError


class EvaluationTiming(BaseModel):
    images: int  # real images answered, over all checkpoints (blank images not counted)
    completion_tokens: int
    seconds: float
    images_per_s: float
    tokens_per_s: float

    @classmethod
    def measure(cls, records: CheckpointRecords, seconds: float) -> "EvaluationTiming":
        flat = [record for datasets in records.values() for rows in datasets.values() for record in rows]
        tokens = sum(int(record.metadata.get("completion_tokens", 0)) for record in flat)
        return cls(
            images=len(flat),
            completion_tokens=tokens,
            seconds=seconds,
            images_per_s=len(flat) / seconds if seconds > 0 else 0.0,
            tokens_per_s=tokens / seconds if seconds > 0 else 0.0,
        )


class EvaluationOutcome(BaseModel):
    checkpoints: list[str]  # in the order they were asked for; "base" or "NAME:VERSION"
    datasets: dict[str, str]  # dataset -> label set it is scored on
    in_distribution: list[str]
    out_of_distribution: list[str]
    records: CheckpointRecords
    scores: dict[str, dict[str, LabelSetScores]]  # checkpoint -> dataset; failures predict no label
    baselines: dict[str, DatasetBaselines]  # dataset -> shortcut baselines
    timing: EvaluationTiming

    @classmethod
    def from_records(
        cls,
        records: CheckpointRecords,
        datasets: dict[str, str],
        in_distribution: list[str],
        out_of_distribution: list[str],
        baselines: dict[str, DatasetBaselines],
        timing: EvaluationTiming,
    ) -> "EvaluationOutcome":
        scores = {
            checkpoint: {
                dataset: score_predictions(rows, datasets[dataset]) for dataset, rows in by_dataset.items()
            }
            for checkpoint, by_dataset in records.items()
        }
        return cls(
            checkpoints=list(records),
            datasets=datasets,
            in_distribution=in_distribution,
            out_of_distribution=out_of_distribution,
            records=records,
            scores=scores,
            baselines=baselines,
            timing=timing,
        )

    def macro_f1(self, checkpoint: str, dataset: str) -> float:
        try:
            return self.scores[checkpoint][dataset].macro_f1
        except KeyError:
            raise UserError(
                f"no scores for checkpoint {checkpoint!r} on {dataset!r}; "
                f"checkpoints {self.checkpoints}, datasets {list(self.datasets)}"
            ) from None

    def validation_point(self, step: int, checkpoint: str) -> ValidationPoint:
        """The checkpoint's ID and OOD macro-F1, for checkpoint selection and the OOD early warning."""
        if not self.out_of_distribution:
            raise UserError("a validation point needs an out-of-distribution dataset")
        return ValidationPoint(
            step=step,
            id_macro_f1=self.macro_f1(checkpoint, self.in_distribution[0]),
            ood_macro_f1=self.macro_f1(checkpoint, self.out_of_distribution[0]),
        )

    def report_config(self, **options: Any) -> ReportConfig:
        """`options`: ReportConfig's baseline_checkpoint, n_resamples, seed, level, valid_only."""
        return ReportConfig(
            datasets=self.datasets,
            in_distribution=self.in_distribution,
            out_of_distribution=self.out_of_distribution,
            **options,
        )

    def build_report(self, config: ReportConfig | None = None) -> EvaluationReport:
        return build_report(self.records, config or self.report_config(), self.baselines)

    def write_report(self, out_dir: str | Path, config: ReportConfig | None = None) -> ReportFiles:
        """report.md, report.json, predictions.jsonl and the PNG charts, each written atomically."""
        return write_report(self.build_report(config), self.records, out_dir)

    def summary(self) -> dict[str, Any]:
        """Macro/micro F1 and fail rate per checkpoint and dataset, and the throughput: one JSON line."""
        return {
            "in_distribution": self.in_distribution,
            "out_of_distribution": self.out_of_distribution,
            "scores": {
                checkpoint: {
                    dataset: {"macro_f1": s.macro_f1, "micro_f1": s.micro_f1, "fail_rate": s.fail_rate}
                    for dataset, s in by_dataset.items()
                }
                for checkpoint, by_dataset in self.scores.items()
            },
            **self.timing.model_dump(),
        }
