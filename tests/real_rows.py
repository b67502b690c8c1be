"""Small copies of NIH ChestX-ray14 and CheXpert built from the real label files torchxrayvision
ships (placeholder images): the tests of splits and of selection versus report sets run on real
rows, real patients and real label combinations.

NIH's official split: torchxrayvision does not ship `test_list.txt`, but it ships Google's 2019
relabelling of NIH images, whose `Set Id` marks the images it drew from NIH's official test split
("test") and from the train/validation split ("val"). The copy's `test_list.txt` names the rows
Google marks "test", so every image the tests call an NIH test image is one.
"""

import csv
import gzip
from pathlib import Path

from tests.unit.dataprep.test_loaders_real_rows import (
    head_rows,
    place_images,
    torchxrayvision_file,
    write_csv,
)


def nih_copy(root: Path, rows: int = 1500) -> Path:
    """The first `rows` rows of NIH's Data_Entry_2017 (v2020) as an NIH folder, with
    `test_list.txt` / `train_val_list.txt` and a placeholder image per row."""
    header, data = head_rows(torchxrayvision_file("Data_Entry_2017_v2020.csv.gz"), rows)
    with gzip.open(
        torchxrayvision_file("google2019_nih-chest-xray-labels.csv.gz"), "rt", newline=""
    ) as lines:
        google_test = {row["Image Index"] for row in csv.DictReader(lines) if row["Set Id"] == "test"}
    write_csv(root / "Data_Entry_2017.csv", header, data)
    names = [row[0] for row in data]
    (root / "test_list.txt").write_text("".join(f"{name}\n" for name in names if name in google_test))
    (root / "train_val_list.txt").write_text(
        "".join(f"{name}\n" for name in names if name not in google_test)
    )
    place_images([root / "images_001" / "images" / name for name in names])
    return root


def nih_test_images(root: Path) -> set[str]:
    return set((root / "test_list.txt").read_text().split())


def chexpert_copy(root: Path, rows: int = 600, test_rows: int = 0) -> Path:
    """CheXpert's train.csv rows as a copy: the first `rows` as train.csv; with `test_rows`, the
    next ones (their patients distinct) as test.csv."""
    header, data = head_rows(torchxrayvision_file("chexpert_train.csv.gz"), rows + test_rows)
    path_column = header.index("Path")
    train, test = data[:rows], data[rows:]
    patients = {row[path_column].split("/")[2] for row in train}
    test = [row for row in test if row[path_column].split("/")[2] not in patients]
    write_csv(root / "train.csv", header, train)
    if test:
        write_csv(root / "test.csv", header, test)
    place_images([root.parent / row[path_column] for row in train + test])
    return root
