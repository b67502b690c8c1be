"""Predictions JSONL: one line per (checkpoint, dataset, image), written beside every report so a
user can audit any number in it, and read back by `cxr-rl score` to recompute the metrics offline."""

from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, field_validator

from shared.atomic_files import write_atomically
from shared.errors import UserError
from shared.jsonl import read_jsonl_models
from shared.labels import check_chexpert_labels


class ScoredPrediction(BaseModel):
    """What scoring needs from one image. Labels are CheXpert names (NIH truths already mapped);
    they are de-duplicated and kept in CheXpert order. Other fields on a line are ignored."""

    model_config = ConfigDict(extra="ignore")

    truth: list[str]
    pred: list[str]  # the parser's labels; scoring treats an invalid completion as predicting none
    valid: bool  # False when the completion could not be parsed
    # Labels the `drop` uncertainty policy masked out for this image (the loader's -1 cells): they
    # count in no label's support, TP, FP or FN, whatever `truth` and `pred` say about them.
    masked: list[str] = []

    @field_validator("truth", "pred", "masked")
    @classmethod
    def _chexpert_labels(cls, labels: list[str]) -> list[str]:
        return check_chexpert_labels(labels)


class PredictionRecord(ScoredPrediction):
    """One model answer on one image, with everything needed to audit how it was scored."""

    model_config = ConfigDict(extra="forbid")

    image_id: str
    dataset: str  # e.g. "chexpert" (in distribution) or "nih" (out of distribution)
    checkpoint: str  # e.g. "base", "sft", "grpo-step-400"
    text: str  # the completion as the model wrote it
    parse_status: str  # the parser's verdict: "ok", or why the completion failed to parse
    metadata: dict[str, Any] = {}


RecordT = TypeVar("RecordT", bound=ScoredPrediction)

CheckpointRecords = dict[str, dict[str, list[PredictionRecord]]]
"""checkpoint -> dataset -> records, in the order the checkpoints should appear in a report."""


def read_jsonl_records(path: str | Path, record_class: type[RecordT]) -> list[RecordT]:
    """Read one record per non-blank line; a bad line is an error naming file:line and the reason."""
    records = read_jsonl_models(path, record_class, what="predictions file")
    if not records:
        raise UserError(f"{path}: no predictions in the file")
    return records


def read_scored_predictions(path: str | Path) -> list[ScoredPrediction]:
    """Lines need only `truth`, `pred` and `valid`, as `cxr-rl score` accepts them."""
    return read_jsonl_records(path, ScoredPrediction)


def read_prediction_records(path: str | Path) -> list[PredictionRecord]:
    return read_jsonl_records(path, PredictionRecord)


def write_prediction_records(records: Iterable[PredictionRecord], path: str | Path) -> Path:
    return write_atomically(path, "".join(record.model_dump_json() + "\n" for record in records))


def group_by_checkpoint(records: Iterable[PredictionRecord]) -> CheckpointRecords:
    grouped: CheckpointRecords = {}
    for record in records:
        grouped.setdefault(record.checkpoint, {}).setdefault(record.dataset, []).append(record)
    return grouped


def flatten_checkpoint_records(grouped: CheckpointRecords) -> list[PredictionRecord]:
    return [record for datasets in grouped.values() for records in datasets.values() for record in records]
