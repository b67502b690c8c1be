"""The loaders on the real CheXpert (223,414 rows) and NIH (112,120 rows) label files that
torchxrayvision ships, without their images: placeholder images for a sample of rows, label counts
checked against an independent count with the csv module, and the full files loaded with every
missing image reported."""

import csv
import gzip
import importlib.util
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest

from dataprep.chexpert import load_chexpert
from dataprep.loading import LoadOptions
from dataprep.nih import load_nih
from shared.labels import CHEXPERT_LABELS, NIH_TO_CHEXPERT_9

SAMPLE_ROWS = 300
# CPU seconds, measured ~4 s (CheXpert) and <1 s (NIH): CPU time, not wall time, so that a busy
# machine's waiting does not count
FULL_LOAD_SECONDS = 60
PLACEHOLDER_JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb004300080606070605080707070909080a0c140d0c0b0b0c1912130f14"
    "1d1a1f1e1d1a1c1c20242e2720222c231c1c2837292c30313434341f27393d38323c2e333432ffc0000b080001000101011100"
    "ffc4001f0000010501010101010100000000000000000102030405060708090a0bffc400b5100002010303020403050504040000"
    "017d01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a2526272829"
    "2a3435363738393a434445464748494a535455565758595a636465666768696a737475767778797a838485868788898a9293"
    "9495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8"
    "e9eaf1f2f3f4f5f6f7f8f9faffda0008010100003f00fbd3ffd9"
)


def torchxrayvision_file(name: str) -> Path:
    spec = importlib.util.find_spec("torchxrayvision")  # not imported: that would import torch
    if spec is None or spec.origin is None:
        pytest.skip("torchxrayvision (a dev dependency) is not installed")
    path = Path(spec.origin).parent / "data" / name
    if not path.is_file():
        pytest.skip(f"torchxrayvision does not ship {name}")
    return path


def head_rows(gz_path: Path, rows: int) -> tuple[list[str], list[list[str]]]:
    with gzip.open(gz_path, "rt", newline="") as lines:
        reader = csv.reader(lines)
        header = next(reader)
        return header, [row for _, row in zip(range(rows), reader, strict=False)]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)


def place_images(paths: list[Path]) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(PLACEHOLDER_JPEG)


# ---------------------------------------------------------------------------------------------
# CheXpert
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chexpert_csv() -> Path:
    return torchxrayvision_file("chexpert_train.csv.gz")


def independent_chexpert_counts(rows: list[dict]) -> tuple[int, Counter, Counter]:
    frontal = [row for row in rows if row["Frontal/Lateral"] == "Frontal"]
    positives = Counter(label for row in frontal for label in CHEXPERT_LABELS if row[label] == "1.0")
    uncertain = Counter(label for row in frontal for label in CHEXPERT_LABELS if row[label] == "-1.0")
    return len(frontal), positives, uncertain


def test_chexpert_sample_counts_match_an_independent_count(tmp_path, chexpert_csv):
    header, rows = head_rows(chexpert_csv, SAMPLE_ROWS)
    write_csv(tmp_path / "train.csv", header, rows)
    place_images([tmp_path / row[0] for row in rows])
    result = load_chexpert(tmp_path, LoadOptions(progress=False))
    frontal, positives, uncertain = independent_chexpert_counts(
        [dict(zip(header, row, strict=True)) for row in rows]
    )
    assert result.report.images == frontal
    assert result.report.skipped == {"view not selected": SAMPLE_ROWS - frontal}
    assert result.report.prevalence == {label: positives[label] for label in CHEXPERT_LABELS}
    assert result.report.uncertain == {label: count for label, count in uncertain.items() if count}
    u_ones = load_chexpert(tmp_path, LoadOptions(uncertain="ones", progress=False))
    assert u_ones.report.prevalence == {
        label: positives[label] + uncertain[label] for label in CHEXPERT_LABELS
    }
    sample = result.records[0]
    assert Path(sample.image).is_file() and sample.metadata["patient"].startswith("patient")


def test_chexpert_full_file_reports_every_missing_image(tmp_path, chexpert_csv):
    with gzip.open(chexpert_csv, "rb") as source, (tmp_path / "train.csv").open("wb") as target:
        shutil.copyfileobj(source, target)
    with open(tmp_path / "train.csv", newline="") as lines:
        rows = list(csv.DictReader(lines))
    frontal = sum(row["Frontal/Lateral"] == "Frontal" for row in rows)
    place_images(
        [tmp_path / row["Path"] for row in rows[:SAMPLE_ROWS] if row["Frontal/Lateral"] == "Frontal"]
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    result = load_chexpert(tmp_path, LoadOptions(progress=False))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    present = sum(row["Frontal/Lateral"] == "Frontal" for row in rows[:SAMPLE_ROWS])
    assert len(rows) == 223_414
    assert result.report.images == present
    assert result.report.skipped == {
        "missing image": frontal - present,
        "view not selected": len(rows) - frontal,
    }
    print(f"CheXpert train.csv, {len(rows)} rows, images missing: {seconds:.1f} s wall, {cpu:.1f} s CPU")
    assert cpu < FULL_LOAD_SECONDS


# ---------------------------------------------------------------------------------------------
# NIH ChestX-ray14
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nih_csv() -> Path:
    return torchxrayvision_file("Data_Entry_2017_v2020.csv.gz")


def independent_nih_counts(rows: list[list[str]]) -> Counter:
    counts: Counter = Counter()
    for row in rows:
        mapped = {NIH_TO_CHEXPERT_9[label] for label in row[1].split("|") if label in NIH_TO_CHEXPERT_9}
        counts.update(mapped)
    return counts


def test_nih_sample_counts_match_an_independent_count(tmp_path, nih_csv):
    header, rows = head_rows(nih_csv, SAMPLE_ROWS)
    assert header[:2] == ["Image Index", "Finding Labels"]
    write_csv(tmp_path / "Data_Entry_2017_v2020.csv", header, rows)
    # Half the images unpacked as images_001/images/, half as images_002/ (both layouts occur).
    place_images([tmp_path / "images_001" / "images" / row[0] for row in rows[: SAMPLE_ROWS // 2]])
    place_images([tmp_path / "images_002" / row[0] for row in rows[SAMPLE_ROWS // 2 :]])
    result = load_nih(tmp_path, LoadOptions(progress=False))
    expected = independent_nih_counts(rows)
    assert result.report.images == SAMPLE_ROWS and not result.report.skipped
    assert result.report.prevalence == {label: expected[label] for label in result.report.prevalence}
    assert sum(expected.values()) > 0 and expected["No Finding"] > 0


def test_nih_full_file_reports_every_missing_image(tmp_path, nih_csv):
    shutil.copy(nih_csv, tmp_path / "Data_Entry_2017_v2020.csv.gz")
    _, rows = head_rows(nih_csv, SAMPLE_ROWS)
    place_images([tmp_path / "images_001" / "images" / row[0] for row in rows])
    started, cpu_started = time.perf_counter(), time.process_time()
    result = load_nih(tmp_path, LoadOptions(progress=False))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    assert result.report.images == SAMPLE_ROWS
    assert result.report.skipped == {"missing image": 112_120 - SAMPLE_ROWS}
    assert any("split is 'unspecified'" in note for note in result.report.notes)
    print(
        f"NIH Data_Entry_2017_v2020.csv, 112120 rows, images missing: {seconds:.1f} s wall, {cpu:.1f} s CPU"
    )
    assert cpu < FULL_LOAD_SECONDS
