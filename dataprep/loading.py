"""What the MIMIC-CXR-JPG, CheXpert and NIH loaders share: options, the load report, reading CSVs
by column name, label values and the uncertainty policy, and fast checks that images exist."""

import csv
import gzip
import io
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from shared.config import StrictModel
from shared.errors import UserError
from shared.labels import CHEXPERT_LABELS
from shared.manifest import ManifestRecord

FRONTAL_VIEWS = ("PA", "AP")
LATERAL_VIEWS = ("LATERAL", "LL", "RL", "XTABLE LATERAL")
# Other views MIMIC-CXR's metadata uses: oblique, decubitus, lordotic and axial projections.
OTHER_VIEWS = (
    "AP AXIAL",
    "PA LLD",
    "AP LLD",
    "AP RLD",
    "PA RLD",
    "LAO",
    "RAO",
    "LPO",
    "SWIMMERS",
    "AP LORDOTIC",
)
KNOWN_VIEWS = FRONTAL_VIEWS + LATERAL_VIEWS + OTHER_VIEWS
LABEL_ALIASES = {"Airspace Opacity": "Lung Opacity"}  # MIMIC-CXR's hand-labelled test set says Airspace
EXAMPLES_PER_REASON = 3


class SkipReason(StrEnum):
    MISSING_IMAGE = "missing image"
    UNKNOWN_VIEW = "unknown view"
    BAD_LABEL_VALUE = "unparseable label value"
    UNKNOWN_LABEL = "unknown label"
    MALFORMED_ROW = "malformed row"
    NO_LABELS = "no labels for study"
    DUPLICATE = "duplicate image"
    # Not errors: rows left out by the options (view filter, one image per study).
    VIEW_NOT_SELECTED = "view not selected"
    OTHER_IMAGE_OF_STUDY = "other image of study chosen"


POLICY_REASONS = frozenset({SkipReason.VIEW_NOT_SELECTED, SkipReason.OTHER_IMAGE_OF_STUDY})


class LoadOptions(StrictModel):
    uncertain: Literal["zeros", "ones", "drop"] = Field(
        "zeros", description="-1 as negative (U-Zeros), positive, or masked"
    )
    strict: bool = Field(False, description="a malformed row raises instead of being skipped and counted")
    views: tuple[str, ...] = Field(
        FRONTAL_VIEWS, description="views to keep, best first (the choice for one per study)"
    )
    one_per_study: bool = Field(True, description="MIMIC-CXR: keep only the best-ranked image of each study")
    nih_categories: Literal[9, 10] = 9
    progress: bool = True

    @field_validator("views")
    @classmethod
    def _known_views(cls, views: tuple[str, ...]) -> tuple[str, ...]:
        views = tuple(view.strip().upper() for view in views)
        unknown = [view for view in views if view not in KNOWN_VIEWS]
        if unknown or not views:
            raise ValueError(f"unknown view(s) {unknown}; known views: {list(KNOWN_VIEWS)}")
        return views


class LoadReport(BaseModel):
    source: str
    root: str
    files: list[str]  # the label files read
    images: int  # usable images (records returned)
    skipped: dict[str, int]  # reason -> rows or images left out
    examples: dict[str, list[str]]  # reason -> up to three "file:line: detail"
    prevalence: dict[str, int]  # label -> positive images
    uncertain: dict[str, int]  # label -> images with -1
    splits: dict[str, int]
    notes: list[str] = []


@dataclass
class LoadResult:
    records: list[ManifestRecord]
    report: LoadReport


@dataclass
class SkipLog:
    """Counts left-out rows by reason; in strict mode the first malformed one is an error."""

    strict: bool
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: SkipReason, file: Path | str, line: int, detail: str) -> None:
        if self.strict and reason not in POLICY_REASONS:
            raise UserError(f"{file}:{line}: {reason.value}: {detail}")
        self.counts[reason.value] += 1
        examples = self.examples.setdefault(reason.value, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append(f"{file}:{line}: {reason.value}: {detail}")


def open_text(path: Path) -> io.TextIOBase:
    """A CSV or text file, gzip-compressed or not (MIMIC ships .csv.gz)."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", newline="", encoding="utf-8-sig")
    return path.open(newline="", encoding="utf-8-sig")


class CsvTable:
    """A CSV read by column name: releases order their columns differently."""

    def __init__(self, path: Path):
        if not path.is_file():
            raise UserError(f"file not found: {path}")
        self.path = path
        with open_text(path) as lines:
            header = next(csv.reader(lines), None)
        if not header:
            raise UserError(f"{path}: empty file, expected a header row")
        self.header = [name.strip() for name in header]
        self.columns = {name: index for index, name in enumerate(self.header)}

    def has(self, name: str) -> bool:
        return name in self.columns

    def require(self, *names: str) -> list[int]:
        missing = [name for name in names if name not in self.columns]
        if missing:
            raise UserError(f"{self.path}: missing column(s) {missing}; found {self.header}")
        return [self.columns[name] for name in names]

    def label_columns(self) -> dict[str, int]:
        """CheXpert label -> column index, for the label columns this file has."""
        found = {}
        for name, index in self.columns.items():
            label = LABEL_ALIASES.get(name, name)
            if label in CHEXPERT_LABELS:
                found[label] = index
        return found

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """(line number, fields) per data row; rows with too few fields are padded with blanks."""
        with open_text(self.path) as lines:
            reader = csv.reader(lines)
            next(reader, None)
            width = len(self.header)
            for fields in reader:
                if not fields:
                    continue
                if len(fields) < width:
                    fields = fields + [""] * (width - len(fields))
                yield reader.line_num, fields


LABEL_VALUES = {"": 0, "0": 0, "0.0": 0, "1": 1, "1.0": 1, "-1": -1, "-1.0": -1}


class BadLabelValue(ValueError):
    pass


def parse_label_value(text: str) -> int:
    """CheXpert-style label cell -> 1 (positive), 0 (negative or blank) or -1 (uncertain)."""
    value = LABEL_VALUES.get(text.strip())
    if value is not None:
        return value
    try:
        number = float(text)
    except ValueError:
        raise BadLabelValue(text) from None
    if number not in (1.0, 0.0, -1.0):
        raise BadLabelValue(text)
    return int(number)


@dataclass(frozen=True)
class StudyLabels:
    positives: list[str]  # after the uncertainty policy, in CheXpert order
    uncertain: list[str]  # labels written -1


def label_cells(label_columns: dict[str, int]) -> list[tuple[str, int]]:
    """(label, column) pairs in CheXpert order: what `read_label_cells` walks for every row."""
    return [(label, label_columns[label]) for label in CHEXPERT_LABELS if label in label_columns]


def read_label_cells(fields: list[str], cells: list[tuple[str, int]], policy: str) -> StudyLabels:
    """Apply the uncertainty policy to one row's label cells; raises BadLabelValue naming the cell."""
    positives, uncertain = [], []
    for label, index in cells:
        text = fields[index]
        value = LABEL_VALUES.get(text)  # the common cases without a function call: real files are big
        if value is None:
            try:
                value = parse_label_value(text)
            except BadLabelValue:
                raise BadLabelValue(f"{label}={text!r}") from None
        if value == 1:
            positives.append(label)
        elif value == -1:
            uncertain.append(label)
            if policy == "ones":
                positives.append(label)
    return StudyLabels(positives=positives, uncertain=uncertain)


def uncertainty_metadata(labels: StudyLabels, policy: str) -> dict:
    """What travels with a record: which labels were -1 and, under `drop`, which to mask out."""
    metadata: dict = {"uncertain": labels.uncertain}
    if policy == "drop":
        metadata["masked"] = labels.uncertain
    return metadata


class ImageIndex:
    """Whether image files exist. Study folders of one to three images (MIMIC, CheXpert) are
    checked with one stat per image: over CheXpert's 223k images that took 1.0 s against 4.0 s for
    listing every study folder (warm cache, 2 cores). Folder listings serve where one listing
    answers many questions (a study's other file types, CheXpert's study-level rows)."""

    def __init__(self) -> None:
        self._listings: dict[str, frozenset[str]] = {}

    def listing(self, folder: str) -> frozenset[str]:
        names = self._listings.get(folder)
        if names is None:
            try:
                names = frozenset(os.listdir(folder))
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                names = frozenset()
            self._listings[folder] = names
        return names

    @staticmethod
    def is_file(path: str) -> bool:
        return os.path.isfile(path)


def make_record(
    record_id: str, image: str, labels: list[str], source: str, split: str, metadata: dict
) -> ManifestRecord:
    """A manifest record from loader output without re-validating it: the loaders build `labels`
    from CHEXPERT_LABELS in CheXpert order (or through `map_nih_labels`), and validating 200k
    records would re-check every label list (a third of a full CheXpert load)."""
    return ManifestRecord.model_construct(
        id=record_id, image=image, labels=labels, source=source, split=split, target=None, metadata=metadata
    )


def build_report(
    source: str,
    root: Path,
    files: list[Path],
    records: list[ManifestRecord],
    skips: SkipLog,
    label_names: tuple[str, ...] = CHEXPERT_LABELS,
    notes: list[str] | None = None,
) -> LoadReport:
    positives = Counter(label for record in records for label in record.labels)
    uncertain = Counter(label for record in records for label in record.metadata.get("uncertain", []))
    return LoadReport(
        source=source,
        root=str(root),
        files=[str(path) for path in files],
        images=len(records),
        skipped=dict(sorted(skips.counts.items())),
        examples=skips.examples,
        prevalence={label: positives[label] for label in label_names},
        uncertain={label: uncertain[label] for label in label_names if uncertain[label]},
        splits=dict(sorted(Counter(record.split for record in records).items())),
        notes=notes or [],
    )


def find_one(root: Path, patterns: tuple[str, ...], what: str) -> Path:
    """The first file under `root` matching one of the patterns (newest release first)."""
    for pattern in patterns:
        matches = sorted(root.glob(pattern), reverse=True)
        if matches:
            return matches[0]
    raise UserError(f"{what} not found in {root} (looked for {', '.join(patterns)})")


def check_root(root: Path, what: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"{what} root {root} is not a folder")
    return root.resolve()
