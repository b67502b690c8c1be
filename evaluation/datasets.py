"""The datasets of an evaluation: a manifest each, the label set it is scored on (inferred from
the manifest's sources when not given) and every image checked to exist before the server is asked."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, field_validator

from shared.config import StrictModel
from shared.errors import UserError
from shared.labels import LABEL_SETS, map_nih_labels
from shared.manifest import ManifestRecord, read_manifest


class EvalDataset(StrictModel):
    manifest: Path
    label_set: str | None = Field(None, description="None: nih9 for an NIH manifest, chexpert14 otherwise")

    @field_validator("label_set")
    @classmethod
    def _known(cls, name: str | None) -> str | None:
        if name is not None and name not in LABEL_SETS:
            raise ValueError(f"unknown label set {name!r}; choose one of {sorted(LABEL_SETS)}")
        return name


DatasetSpec = EvalDataset | tuple[str | Path, str | None]


@dataclass(frozen=True)
class LoadedDataset:
    name: str
    manifest: Path
    label_set: str
    records: list[ManifestRecord]
    image_paths: list[Path]
    truths: list[list[str]]  # CheXpert names; for nih10 re-mapped from the NIH findings when known
    masks: list[list[str]]  # labels the `drop` uncertainty policy masked out, per image


def infer_label_set(records: Sequence[ManifestRecord], manifest: Path) -> str:
    sources = {record.source for record in records}
    nih = {source for source in sources if "nih" in source.lower()}
    if not nih:
        return "chexpert14"
    if nih == sources:
        return "nih9"  # the paper's out-of-distribution scoring: the 9 categories NIH shares
    raise UserError(
        f"{manifest}: mixes NIH and other sources ({sorted(sources)}); name the label set with --labels"
    )


def truth_labels(record: ManifestRecord, label_set_name: str, manifest: Path) -> list[str]:
    nih_findings = record.metadata.get("nih_labels")
    if label_set_name != "nih10" or not isinstance(nih_findings, list):
        return list(record.labels)
    try:  # manifests map NIH findings onto 9 categories by default; nih10 adds Effusion back
        return map_nih_labels(nih_findings, categories=10)
    except UserError as error:
        raise UserError(f"{manifest}: image {record.id!r}: {error}") from None


def load_dataset(name: str, spec: DatasetSpec) -> LoadedDataset:
    if not isinstance(spec, EvalDataset):
        manifest, label_set_name = spec
        spec = EvalDataset(manifest=Path(manifest), label_set=label_set_name)
    records = read_manifest(spec.manifest)
    if not records:
        raise UserError(f"dataset {name!r}: {spec.manifest} lists no images")
    seen: set[str] = set()
    for record in records:
        if record.id in seen:
            raise UserError(f"dataset {name!r}: {spec.manifest} lists image {record.id!r} twice")
        seen.add(record.id)
    paths = [record.image_path(spec.manifest.parent) for record in records]
    missing = [(record, path) for record, path in zip(records, paths, strict=True) if not path.is_file()]
    if missing:
        record, path = missing[0]
        raise UserError(
            f"dataset {name!r}: image of {record.id!r} not found at {path} ({len(missing)} missing in all)"
        )
    label_set_name = spec.label_set or infer_label_set(records, spec.manifest)
    return LoadedDataset(
        name=name,
        manifest=spec.manifest,
        label_set=label_set_name,
        records=records,
        image_paths=paths,
        truths=[truth_labels(record, label_set_name, spec.manifest) for record in records],
        masks=[masked_labels(record) for record in records],
    )


def masked_labels(record: ManifestRecord) -> list[str]:
    """The record's masked labels (`metadata["masked"]`, written by the loaders under `drop`)."""
    masked = record.metadata.get("masked", [])
    return [label for label in masked if isinstance(label, str)] if isinstance(masked, list) else []
