"""NIH ChestX-ray14 as it is on disk: `Data_Entry_2017.csv` (or the `_v2020` release),
`train_val_list.txt` / `test_list.txt`, and PNGs under `images*/` or `images*/images/`.

Labels become CheXpert names through the paper's 9-category mapping (`shared.labels`), or the
10-category one that adds Effusion; NIH findings without a CheXpert counterpart drop out.
"""

import os
from pathlib import Path

from tqdm import tqdm

from dataprep.loading import (
    FRONTAL_VIEWS,
    CsvTable,
    LoadOptions,
    LoadResult,
    SkipLog,
    SkipReason,
    build_report,
    check_root,
    find_one,
    make_record,
    open_text,
)
from shared.labels import NIH9_LABELS, NIH10_LABELS, NIH_LABELS, NIH_NO_FINDING, map_nih_labels

CSV_PATTERNS = (
    "Data_Entry_2017_v2020.csv",
    "Data_Entry_2017.csv",
    "Data_Entry_2017_v2020.csv.gz",
    "Data_Entry_2017.csv.gz",
)
SPLIT_LISTS = {"train_val": "train_val_list.txt", "test": "test_list.txt"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")


def load_nih(root: Path, options: LoadOptions | None = None, csv_file: Path | None = None) -> LoadResult:
    options = options or LoadOptions()
    root = check_root(root, "NIH ChestX-ray14")
    csv_path = Path(csv_file) if csv_file else find_one(root, CSV_PATTERNS, "NIH Data_Entry_2017.csv")
    if not csv_path.is_absolute():
        csv_path = root / csv_path
    table = CsvTable(csv_path)
    image_column, labels_column, view_column = table.require("Image Index", "Finding Labels", "View Position")
    patient_column, follow_up_column = table.columns.get("Patient ID"), table.columns.get("Follow-up #")
    splits, split_files = read_split_lists(root)
    notes = (
        [] if split_files else [f"no train_val_list.txt / test_list.txt in {root}: split is 'unspecified'"]
    )
    images = index_images(root)
    if not images:
        notes.append(f"no images found under {root}/images*/ or {root}/images*/images/")
    known = set(NIH_LABELS) | {NIH_NO_FINDING}
    skips = SkipLog(options.strict)
    records = []
    seen: set[str] = set()
    name = csv_path.name
    for line, fields in tqdm(table.rows(), desc=name, unit="row", disable=not options.progress, delay=2.0):
        image_name = fields[image_column].strip()
        findings = [label.strip() for label in fields[labels_column].split("|") if label.strip()]
        view = fields[view_column].strip().upper()
        if not image_name or not findings:
            skips.skip(SkipReason.MALFORMED_ROW, name, line, "empty Image Index or Finding Labels")
            continue
        if image_name in seen:
            skips.skip(SkipReason.DUPLICATE, name, line, image_name)
            continue
        seen.add(image_name)
        if unknown := [label for label in findings if label not in known]:
            skips.skip(SkipReason.UNKNOWN_LABEL, name, line, f"{image_name}: {unknown}")
        elif view not in FRONTAL_VIEWS:
            skips.skip(
                SkipReason.UNKNOWN_VIEW, name, line, f"{image_name}: View Position {view or '(blank)'!r}"
            )
        elif view not in options.views:
            skips.skip(SkipReason.VIEW_NOT_SELECTED, name, line, f"{image_name}: {view}")
        elif image_name not in images:
            skips.skip(SkipReason.MISSING_IMAGE, name, line, f"{image_name} not under images*/")
        else:
            metadata = {"nih_labels": findings, "view": view}
            if patient_column is not None:
                metadata["patient"] = fields[patient_column].strip()
            if follow_up_column is not None:
                metadata["follow_up"] = fields[follow_up_column].strip()
            records.append(
                make_record(
                    record_id=image_name,
                    image=images[image_name],
                    labels=map_nih_labels(findings, options.nih_categories),
                    source="nih",
                    split=splits.get(image_name, "unspecified"),
                    metadata=metadata,
                )
            )
    label_names = NIH9_LABELS if options.nih_categories == 9 else NIH10_LABELS
    return LoadResult(
        records, build_report("nih", root, [csv_path, *split_files], records, skips, label_names, notes)
    )


def read_split_lists(root: Path) -> tuple[dict[str, str], list[Path]]:
    splits: dict[str, str] = {}
    files = []
    for split, file_name in SPLIT_LISTS.items():
        path = root / file_name
        if path.is_file():
            files.append(path)
            with open_text(path) as lines:
                splits.update((line.strip(), split) for line in lines if line.strip())
    return splits, files


def index_images(root: Path) -> dict[str, str]:
    """Image file name -> absolute path, from the release's folders: `images/`, `images_001/`, ...
    and `images_001/images/` (how the Kaggle copy unpacks). One listing per folder."""
    found: dict[str, str] = {}
    folders = sorted(path for path in root.glob("images*") if path.is_dir())
    for folder in folders:
        for candidate in (folder, folder / "images"):
            try:
                entries = os.scandir(candidate)
            except (FileNotFoundError, NotADirectoryError):
                continue
            with entries:
                for entry in entries:
                    if entry.name.lower().endswith(IMAGE_SUFFIXES):
                        found.setdefault(entry.name, entry.path)
    return found
