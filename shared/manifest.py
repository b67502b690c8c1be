"""Manifests: JSONL files of labelled X-rays, the hand-off between data preparation, SFT, GRPO
and evaluation. One line per image: its path, CheXpert labels, source, split and (for SFT) the
target text."""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import field_validator

from shared.atomic_files import atomic_writer
from shared.config import StrictModel
from shared.jsonl import read_jsonl_models
from shared.labels import check_chexpert_labels


class ManifestRecord(StrictModel):
    id: str
    image: str  # absolute, or relative to the manifest's folder
    labels: list[str]  # CheXpert label names (NIH images already mapped)
    source: str = "unknown"  # mimic | chexpert | nih | phantom-<style> | ...
    split: str = "unspecified"
    target: str | None = None  # SFT target text (think + solution), when this is SFT data
    metadata: dict[str, Any] = {}

    @field_validator("labels")
    @classmethod
    def _chexpert_labels(cls, labels: list[str]) -> list[str]:
        return check_chexpert_labels(labels)

    def image_path(self, manifest_dir: str | Path) -> Path:
        path = Path(self.image)
        return path if path.is_absolute() else Path(manifest_dir) / path


def read_manifest(path: str | Path) -> list[ManifestRecord]:
    """Read a JSONL manifest; a bad line is an error naming the file, the line and the reason."""
    return read_jsonl_models(path, ManifestRecord, what="manifest")


def write_manifest(records: Iterable[ManifestRecord], path: str | Path) -> Path:
    """Write atomically: a crash midway leaves any earlier file intact."""
    with atomic_writer(path, "w") as out:
        for record in records:
            out.write(record.model_dump_json(exclude_defaults=False) + "\n")
    return Path(path)
