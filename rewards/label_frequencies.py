"""Label frequencies for the nuanced reward's false-positive weights, counted in real label files.

The default, `CHEXPERT_LABEL_FREQUENCIES`, is the share of CheXpert's 191,027 frontal training
images with each label positive (uncertain counted as negative, U-Zeros, as the loaders do by
default), counted in the copy of CheXpert's train.csv that torchxrayvision ships. The paper trains
on MIMIC-CXR, whose labels come from the same CheXpert labeler; MIMIC's label file is credentialed,
so derive its shares (or your training split's) yourself:

    cxr-rl reward frequencies                                  # the default, from torchxrayvision
    cxr-rl reward frequencies --csv mimic-cxr-2.0.0-chexpert.csv.gz --out nuanced.yaml
    cxr-rl reward frequencies --manifest data/splits/rl.jsonl --out nuanced.yaml

The YAML written is a nuanced reward config (`--config nuanced.yaml`, or the run config's
`reward.config`).
"""

import csv
import gzip
import importlib.util
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from shared.errors import UserError
from shared.labels import CHEXPERT_LABELS
from shared.manifest import read_manifest

# `cxr-rl reward frequencies` on torchxrayvision 1.5.7's chexpert_train.csv.gz (CheXpert-v1.0-small
# train.csv): 191,027 frontal images, 4.1% of them with no positive label.
CHEXPERT_LABEL_FREQUENCIES: dict[str, float] = {
    "No Finding": 0.0889,
    "Enlarged Cardiomediastinum": 0.0481,
    "Cardiomegaly": 0.1224,
    "Lung Opacity": 0.4932,
    "Lung Lesion": 0.0369,
    "Edema": 0.26,
    "Consolidation": 0.068,
    "Pneumonia": 0.0245,
    "Atelectasis": 0.1556,
    "Pneumothorax": 0.0926,
    "Pleural Effusion": 0.4026,
    "Pleural Other": 0.0131,
    "Fracture": 0.0389,
    "Support Devices": 0.561,
}
_POSITIVE = frozenset({"1", "1.0"})
_VIEW_COLUMN = "Frontal/Lateral"


@dataclass(frozen=True, slots=True)
class FrequencyTable:
    source: str
    images: int
    frequencies: dict[str, float]  # every CheXpert label, in (0, 1]
    no_positive: float  # share of images with no positive label

    def to_yaml(self) -> str:
        lines = [
            f"# {self.source}: share of {self.images:,} images with each CheXpert label positive",
            f"# ({self.no_positive:.1%} with none). Written by `cxr-rl reward frequencies`.",
            "label_frequencies:",
            *(f"  {label}: {value}" for label, value in self.frequencies.items()),
        ]
        return "\n".join(lines) + "\n"


def label_frequencies(label_sets: list[list[str]]) -> dict[str, float]:
    """Share of samples carrying each CheXpert label, rounded to 4 decimals. A label no sample
    carries gets half a count, so that its weight stays defined and small."""
    if not label_sets:
        raise ValueError("need at least one sample to count label frequencies")
    counts = Counter(label for labels in label_sets for label in set(labels))
    return {
        label: max(round(max(counts[label], 0.5) / len(label_sets), 4), 0.0001) for label in CHEXPERT_LABELS
    }


def _table(source: str, label_sets: list[list[str]]) -> FrequencyTable:
    return FrequencyTable(
        source=source,
        images=len(label_sets),
        frequencies=label_frequencies(label_sets),
        no_positive=sum(not labels for labels in label_sets) / len(label_sets),
    )


def _rows(path: Path) -> Iterator[dict[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as lines:
        yield from csv.DictReader(lines)


def frequencies_from_csv(path: Path) -> FrequencyTable:
    """A CheXpert-style label CSV: CheXpert's train.csv (frontal rows only, by its Frontal/Lateral
    column) or MIMIC-CXR's mimic-cxr-2.0.0-chexpert.csv (one row per study). Positive is 1 / 1.0;
    uncertain (-1) and blank count as negative."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"label CSV not found: {path}")
    label_sets: list[list[str]] = []
    try:
        for number, row in enumerate(_rows(path)):
            if number == 0 and not set(CHEXPERT_LABELS) <= set(row):
                raise UserError(
                    f"{path}: no CheXpert label columns (needs {', '.join(CHEXPERT_LABELS[:3])}, ...)"
                )
            if _VIEW_COLUMN in row and row[_VIEW_COLUMN] != "Frontal":
                continue
            label_sets.append([label for label in CHEXPERT_LABELS if (row[label] or "").strip() in _POSITIVE])
    except (OSError, csv.Error, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not a readable CSV ({error})") from None
    if not label_sets:
        raise UserError(f"{path}: no frontal rows to count")
    return _table(path.name, label_sets)


def frequencies_from_manifest(path: Path) -> FrequencyTable:
    """A training manifest (JSONL, as `cxr-rl data split` writes): one label set per image."""
    records = read_manifest(path)
    if not records:
        raise UserError(f"{path}: no records to count")
    return _table(Path(path).name, [record.labels for record in records])


def torchxrayvision_chexpert_csv() -> Path:
    """torchxrayvision's copy of CheXpert's train.csv, found without importing the package (which
    would import torch)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or spec.origin is None:
        raise UserError("torchxrayvision is not installed (pip install '.[dev]'); pass --csv or --manifest")
    return Path(spec.origin).parent / "data" / "chexpert_train.csv.gz"
