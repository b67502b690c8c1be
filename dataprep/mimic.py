"""MIMIC-CXR-JPG 2.x as it is on disk: labels per study (chexpert.csv), images per study
(metadata.csv, `files/pXX/p<subject>/s<study>/<dicom_id>.jpg`) and the official split (split.csv).

By default one frontal image per study: PA if the study has one, else AP (`LoadOptions.views`).
"""

import os
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from dataprep.loading import (
    KNOWN_VIEWS,
    BadLabelValue,
    CsvTable,
    ImageIndex,
    LoadOptions,
    LoadResult,
    SkipLog,
    SkipReason,
    StudyLabels,
    build_report,
    check_root,
    find_one,
    label_cells,
    make_record,
    read_label_cells,
    uncertainty_metadata,
)

LABELS_PATTERNS = ("mimic-cxr-2.*-chexpert.csv", "mimic-cxr-2.*-chexpert.csv.gz")
METADATA_PATTERNS = ("mimic-cxr-2.*-metadata.csv", "mimic-cxr-2.*-metadata.csv.gz")
SPLIT_PATTERNS = ("mimic-cxr-2.*-split.csv", "mimic-cxr-2.*-split.csv.gz")
IMAGE_SUFFIXES = (".jpg", ".dcm", ".png")  # MIMIC-CXR-JPG, or the DICOM release in the same layout


@dataclass(frozen=True)
class MimicImage:
    dicom_id: str
    subject_id: str
    study_id: str
    view: str
    line: int


def load_mimic(root: Path, options: LoadOptions | None = None, labels_file: Path | None = None) -> LoadResult:
    """Read a MIMIC-CXR-JPG copy. `labels_file` replaces chexpert.csv (e.g. the hand-labelled test
    set, whose `Airspace Opacity` column is read as Lung Opacity)."""
    options = options or LoadOptions()
    root = check_root(root, "MIMIC-CXR-JPG")
    skips = SkipLog(options.strict)
    labels_path = (
        Path(labels_file)
        if labels_file
        else find_one(root, LABELS_PATTERNS, "MIMIC-CXR-JPG labels (chexpert.csv)")
    )
    if not labels_path.is_absolute():
        labels_path = root / labels_path
    metadata_path = find_one(root, METADATA_PATTERNS, "MIMIC-CXR-JPG metadata.csv")
    split_files = [path for pattern in SPLIT_PATTERNS for path in sorted(root.glob(pattern), reverse=True)][
        :1
    ]
    notes = [] if split_files else [f"no split.csv in {root}: split is 'unspecified'"]

    study_labels = read_study_labels(CsvTable(labels_path), options, skips)
    splits = read_splits(CsvTable(split_files[0])) if split_files else {}
    studies = read_study_images(CsvTable(metadata_path), options, skips)

    records = []
    index = ImageIndex()
    metadata_name = metadata_path.name
    for study_id, images in tqdm(
        studies.items(), desc="mimic studies", unit="study", disable=not options.progress, delay=2.0
    ):
        labels = study_labels.get(study_id)
        if labels is None:
            for image in images:
                skips.skip(
                    SkipReason.NO_LABELS,
                    metadata_name,
                    image.line,
                    f"study {study_id} has no row in {labels_path.name}",
                )
            continue
        if labels is BAD_STUDY:
            continue  # already counted against its row in the labels file
        found = []
        for image in sorted(images, key=lambda image: options.views.index(image.view)):
            path = find_image(root, image, index)
            if path is None:
                skips.skip(
                    SkipReason.MISSING_IMAGE,
                    metadata_name,
                    image.line,
                    f"{image_folder(root, image)}/{image.dicom_id}.jpg",
                )
            else:
                found.append((image, path))
        keep = found[:1] if options.one_per_study else found
        for image, _ in found[len(keep) :]:
            skips.skip(
                SkipReason.OTHER_IMAGE_OF_STUDY, metadata_name, image.line, f"{image.dicom_id} ({image.view})"
            )
        for image, path in keep:
            metadata = {"subject_id": image.subject_id, "study_id": study_id, "view": image.view}
            metadata.update(uncertainty_metadata(labels, options.uncertain))
            records.append(
                make_record(
                    record_id=image.dicom_id,
                    image=path,
                    labels=labels.positives,
                    source="mimic",
                    split=splits.get(image.dicom_id, "unspecified"),
                    metadata=metadata,
                )
            )
    files = [labels_path, metadata_path, *split_files]
    return LoadResult(records, build_report("mimic", root, files, records, skips, notes=notes))


BAD_STUDY = StudyLabels(positives=[], uncertain=[])  # a study whose labels row was malformed


def read_study_labels(table: CsvTable, options: LoadOptions, skips: SkipLog) -> dict[str, StudyLabels]:
    (study_column,) = table.require("study_id")
    label_columns = table.label_columns()
    if not label_columns:
        table.require("No Finding")  # no label column at all: fail naming one that should be there
    cells = label_cells(label_columns)
    labels: dict[str, StudyLabels] = {}
    for line, fields in table.rows():
        study_id = fields[study_column].strip()
        if not study_id:
            skips.skip(SkipReason.MALFORMED_ROW, table.path.name, line, "empty study_id")
            continue
        try:
            labels[study_id] = read_label_cells(fields, cells, options.uncertain)
        except BadLabelValue as error:
            skips.skip(SkipReason.BAD_LABEL_VALUE, table.path.name, line, f"study {study_id}: {error}")
            labels[study_id] = BAD_STUDY
    return labels


def read_splits(table: CsvTable) -> dict[str, str]:
    dicom_column, split_column = table.require("dicom_id", "split")
    return {fields[dicom_column].strip(): fields[split_column].strip() for _, fields in table.rows()}


def read_study_images(table: CsvTable, options: LoadOptions, skips: SkipLog) -> dict[str, list[MimicImage]]:
    dicom_column, subject_column, study_column, view_column = table.require(
        "dicom_id", "subject_id", "study_id", "ViewPosition"
    )
    studies: dict[str, list[MimicImage]] = {}
    seen: set[str] = set()
    for line, fields in table.rows():
        dicom_id, subject_id, study_id = (
            fields[column].strip() for column in (dicom_column, subject_column, study_column)
        )
        view = fields[view_column].strip().upper()
        if not (dicom_id and subject_id.isdigit() and study_id):
            skips.skip(
                SkipReason.MALFORMED_ROW,
                table.path.name,
                line,
                "dicom_id, subject_id or study_id empty or invalid",
            )
        elif dicom_id in seen:
            skips.skip(SkipReason.DUPLICATE, table.path.name, line, dicom_id)
        elif view not in KNOWN_VIEWS:
            skips.skip(
                SkipReason.UNKNOWN_VIEW,
                table.path.name,
                line,
                f"{dicom_id}: ViewPosition {view or '(blank)'!r}",
            )
        elif view not in options.views:
            skips.skip(SkipReason.VIEW_NOT_SELECTED, table.path.name, line, f"{dicom_id}: {view}")
        else:
            studies.setdefault(study_id, []).append(MimicImage(dicom_id, subject_id, study_id, view, line))
        seen.add(dicom_id)
    return studies


def image_folder(root: Path, image: MimicImage) -> str:
    subject = image.subject_id
    return os.path.join(root, "files", f"p{subject[:2]}", f"p{subject}", f"s{image.study_id}")


def find_image(root: Path, image: MimicImage, index: ImageIndex) -> str | None:
    """The image's path, whichever of .jpg / .dcm / .png it has. One stat finds the usual JPEG;
    only otherwise is the study folder listed (once, for all its images)."""
    folder = image_folder(root, image)
    jpeg = os.path.join(folder, image.dicom_id + ".jpg")
    if index.is_file(jpeg):
        return jpeg
    names = index.listing(folder)
    for suffix in IMAGE_SUFFIXES:
        if image.dicom_id + suffix in names:
            return os.path.join(folder, image.dicom_id + suffix)
    return None
