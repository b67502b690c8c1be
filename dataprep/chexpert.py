"""CheXpert as it is on disk: `train.csv`, `valid.csv` and test CSVs with a `Path` column (or a
study-level `Study` column), `Frontal/Lateral`, `AP/PA` and the 14 label columns.

Paths in the CSVs start with the release folder (`CheXpert-v1.0-small/train/...`); they are
resolved against whichever of the CSV's folder, its parent or the root makes them exist.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from dataprep.loading import (
    FRONTAL_VIEWS,
    BadLabelValue,
    CsvTable,
    ImageIndex,
    LoadOptions,
    LoadResult,
    SkipLog,
    SkipReason,
    build_report,
    check_root,
    label_cells,
    make_record,
    read_label_cells,
    uncertainty_metadata,
)
from shared.errors import UserError
from shared.labels import CHEXPERT_LABELS
from shared.manifest import ManifestRecord

DEFAULT_CSV_PATTERNS = ("train.csv", "valid.csv", "test*.csv")
KNOWN_COLUMNS = {"Path", "Study", "Sex", "Age", "Frontal/Lateral", "AP/PA"}
PATIENT_PATTERN = re.compile(r"patient(\d+)")
BASE_SAMPLE_ROWS = 50


def load_chexpert(
    root: Path, options: LoadOptions | None = None, csv_files: list[Path] | None = None
) -> LoadResult:
    """Read a CheXpert copy. `csv_files` (relative to `root` or absolute) defaults to train.csv,
    valid.csv and test*.csv in `root`; the split is the file name's stem before any `_`."""
    options = options or LoadOptions()
    root = check_root(root, "CheXpert")
    paths = [Path(path) if Path(path).is_absolute() else root / path for path in csv_files or []]
    if not paths:
        paths = [path for pattern in DEFAULT_CSV_PATTERNS for path in sorted(root.glob(pattern))]
    if not paths:
        raise UserError(f"no CheXpert CSV in {root} (looked for {', '.join(DEFAULT_CSV_PATTERNS)})")
    skips = SkipLog(options.strict)
    records: list[ManifestRecord] = []
    notes: list[str] = []
    index = ImageIndex()
    seen: set[str] = set()
    for path in paths:
        table = CsvTable(path)
        notes.extend(read_chexpert_csv(table, root, options, skips, index, records, seen))
    return LoadResult(records, build_report("chexpert", root, paths, records, skips, notes=notes))


def read_chexpert_csv(
    table: CsvTable,
    root: Path,
    options: LoadOptions,
    skips: SkipLog,
    index: ImageIndex,
    records: list[ManifestRecord],
    seen: set[str],
) -> list[str]:
    """Append the usable rows of one CSV to `records`; return notes about the file."""
    study_level = not table.has("Path") and table.has("Study")
    (path_column,) = table.require("Study" if study_level else "Path")
    label_columns = table.label_columns()
    if not label_columns:
        raise UserError(f"{table.path}: no CheXpert label columns; expected some of {list(CHEXPERT_LABELS)}")
    cells = label_cells(label_columns)
    notes = []
    missing_labels = [label for label in CHEXPERT_LABELS if label not in label_columns]
    if missing_labels:
        notes.append(f"{table.path.name}: no column for {missing_labels}; read as negative")
    ignored = [
        name
        for name in table.header
        if name not in KNOWN_COLUMNS and name not in label_columns and name != "Airspace Opacity"
    ]
    if ignored:
        notes.append(f"{table.path.name}: ignored unknown column(s) {ignored}")
    split = table.path.name.split(".")[0].split("_")[0]
    rows = list(table.rows())
    base = resolve_base(
        root, table.path.parent, [fields[path_column].strip() for _, fields in rows[:BASE_SAMPLE_ROWS]]
    )
    column = {name: table.columns.get(name) for name in ("Sex", "Age", "Frontal/Lateral", "AP/PA")}
    name = table.path.name
    for line, fields in tqdm(rows, desc=name, unit="row", disable=not options.progress, delay=2.0):
        relative = fields[path_column].strip()
        if not relative:
            skips.skip(SkipReason.MALFORMED_ROW, name, line, "empty Path")
            continue
        try:
            labels = read_label_cells(fields, cells, options.uncertain)
        except BadLabelValue as error:
            skips.skip(SkipReason.BAD_LABEL_VALUE, name, line, f"{relative}: {error}")
            continue
        if study_level:
            image = first_frontal_image(base.join(relative), index)
            view = "FRONTAL"
            if image is None:
                skips.skip(
                    SkipReason.MISSING_IMAGE, name, line, f"no *frontal* image in {base.join(relative)}"
                )
                continue
        else:
            view = row_view(fields, column, relative)
            if view is None:
                skips.skip(
                    SkipReason.UNKNOWN_VIEW, name, line, f"{relative}: view {view_cells(fields, column)}"
                )
                continue
            if not view_selected(view, options):
                skips.skip(SkipReason.VIEW_NOT_SELECTED, name, line, f"{relative}: {view}")
                continue
            image = base.join(relative)
            if not index.is_file(image):
                skips.skip(SkipReason.MISSING_IMAGE, name, line, image)
                continue
        if relative in seen:
            skips.skip(SkipReason.DUPLICATE, name, line, relative)
            continue
        seen.add(relative)
        metadata = {"view": view, "file": name}
        patient = PATIENT_PATTERN.search(relative)
        if patient:
            metadata["patient"] = patient.group(0)
        for key in ("Sex", "Age"):
            if column[key] is not None and fields[column[key]].strip():
                metadata[key.lower()] = fields[column[key]].strip()
        metadata.update(uncertainty_metadata(labels, options.uncertain))
        records.append(
            make_record(
                record_id=relative,
                image=image,
                labels=labels.positives,
                source="chexpert",
                split=split,
                metadata=metadata,
            )
        )
    return notes


def row_view(fields: list[str], column: dict[str, int | None], relative: str) -> str | None:
    """PA, AP, FRONTAL (AP/PA not given) or LATERAL; None when the row's view cannot be told."""
    frontal_lateral = (
        fields[column["Frontal/Lateral"]].strip().lower() if column["Frontal/Lateral"] is not None else ""
    )
    ap_pa = fields[column["AP/PA"]].strip().upper() if column["AP/PA"] is not None else ""
    if not frontal_lateral and column["Frontal/Lateral"] is None:  # test CSVs: the file name says
        stem = Path(relative).stem.lower()
        frontal_lateral = "frontal" if "frontal" in stem else "lateral" if "lateral" in stem else ""
    if frontal_lateral == "lateral":
        return "LATERAL"
    if frontal_lateral == "frontal":
        return ap_pa if ap_pa in FRONTAL_VIEWS else "FRONTAL"
    return None


def view_cells(fields: list[str], column: dict[str, int | None]) -> str:
    cells = {name: fields[column[name]] for name in ("Frontal/Lateral", "AP/PA") if column[name] is not None}
    return repr(cells) if cells else "not in the file name"


def view_selected(view: str, options: LoadOptions) -> bool:
    if view == "FRONTAL":  # a frontal film whose AP/PA is blank
        return any(chosen in FRONTAL_VIEWS for chosen in options.views)
    return view in options.views


def first_frontal_image(study: str, index: ImageIndex) -> str | None:
    frontal = sorted(name for name in index.listing(study) if "frontal" in name.lower())
    return os.path.join(study, frontal[0]) if frontal else None


@dataclass(frozen=True)
class PathBase:
    """The folder a CSV's paths are relative to; `strip_first` drops their release-folder part
    (for a copy whose `CheXpert-v1.0-small/` folder was renamed)."""

    folder: str
    strip_first: bool = False

    def join(self, relative: str) -> str:
        # Plain strings: pathlib costs seconds over CheXpert's 223k rows.
        if self.strip_first and "/" in relative:
            relative = relative.split("/", 1)[1]
        return os.path.join(self.folder, relative)


def resolve_base(root: Path, csv_folder: Path, sample: list[str]) -> PathBase:
    """The base where most of the sampled paths exist (the CSV's folder when none do)."""
    candidates = [
        PathBase(str(folder), strip)
        for strip in (False, True)
        for folder in (csv_folder, csv_folder.parent, root, root.parent)
    ]
    scores = [
        sum(1 for relative in sample if relative and os.path.exists(base.join(relative)))
        for base in candidates
    ]
    return candidates[max(range(len(candidates)), key=lambda i: (scores[i], -i))]
