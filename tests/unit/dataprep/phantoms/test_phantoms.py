"""The phantom generator: deterministic, the three on-disk layouts, visible findings, label
combinations from the real CheXpert co-occurrence table."""

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataprep.derive_cooccurrence import derive_cooccurrence, torchxrayvision_chexpert_csv
from dataprep.phantoms.datasets import make_phantoms
from dataprep.phantoms.images import render_frontal
from dataprep.phantoms.plan import COOCCURRENCE_TABLE, CooccurrenceTable
from shared.errors import UserError
from shared.labels import CHEXPERT_LABELS, NO_FINDING


def digest_tree(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != "phantoms.json"  # holds the run time
    }


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    first = make_phantoms(tmp_path / "a", n=12, seed=3, size=96)
    again = make_phantoms(tmp_path / "b", n=12, seed=3, size=96, workers=1)
    make_phantoms(tmp_path / "c", n=12, seed=4, size=96)
    assert first.images == again.images
    assert digest_tree(tmp_path / "a") == digest_tree(tmp_path / "b")
    assert digest_tree(tmp_path / "a") != digest_tree(tmp_path / "c")


def test_study_k_does_not_depend_on_n(tmp_path):
    make_phantoms(tmp_path / "small", n=5, seed=0, size=64)
    make_phantoms(tmp_path / "large", n=9, seed=0, size=64)
    small = (tmp_path / "small" / "phantom_truth.jsonl").read_text().splitlines()
    large = (tmp_path / "large" / "phantom_truth.jsonl").read_text().splitlines()
    assert small == large[:5]


def test_layouts_match_the_real_releases(phantom_root):
    with open(phantom_root / "mimic" / "mimic-cxr-2.0.0-chexpert.csv") as lines:
        header = next(csv.reader(lines))
    assert header[:2] == ["subject_id", "study_id"] and sorted(header[2:]) == sorted(CHEXPERT_LABELS)
    with open(phantom_root / "mimic" / "mimic-cxr-2.0.0-metadata.csv") as lines:
        metadata = list(csv.DictReader(lines))
    views = {row["ViewPosition"] for row in metadata}
    assert {"PA", "AP", "LATERAL"} <= views
    row = metadata[0]
    subject = row["subject_id"]
    image = (
        phantom_root
        / "mimic"
        / "files"
        / f"p{subject[:2]}"
        / f"p{subject}"
        / f"s{row['study_id']}"
        / f"{row['dicom_id']}.jpg"
    )
    assert Image.open(image).format == "JPEG"
    with open(phantom_root / "chexpert" / "train.csv") as lines:
        train = list(csv.DictReader(lines))
    assert train[0]["Path"].startswith("CheXpert-v1.0-small/train/patient")
    assert {row["Frontal/Lateral"] for row in train} == {"Frontal", "Lateral"}
    values = {row[label] for row in train for label in CHEXPERT_LABELS}
    assert {"1.0", "", "-1.0"} <= values  # blanks and uncertain, as in the real train.csv
    with open(phantom_root / "nih" / "Data_Entry_2017.csv") as lines:
        nih = list(csv.DictReader(lines))
    listed = (phantom_root / "nih" / "train_val_list.txt").read_text().split() + (
        phantom_root / "nih" / "test_list.txt"
    ).read_text().split()
    assert sorted(listed) == sorted(row["Image Index"] for row in nih)
    png = phantom_root / "nih" / "images_001" / "images" / nih[0]["Image Index"]
    assert Image.open(png).format == "PNG"


def test_institution_styles_differ(phantom_root):
    case = json.loads((phantom_root / "phantom_truth.jsonl").read_text().splitlines()[0])
    subject = str(case["mimic_subject_id"])
    mimic = (
        phantom_root
        / "mimic"
        / "files"
        / f"p{subject[:2]}"
        / f"p{subject}"
        / f"s{case['mimic_study_id']}"
        / f"{case['mimic_dicom_ids']['frontal']}.jpg"
    )
    films = {
        "mimic": np.asarray(Image.open(mimic), dtype=np.float32),
        "chexpert": np.asarray(
            Image.open(phantom_root / "chexpert" / case["chexpert_path"]), dtype=np.float32
        ),
        "nih": np.asarray(
            Image.open(next((phantom_root / "nih").glob(f"images_*/images/{case['nih_image']}"))),
            dtype=np.float32,
        ),
    }
    means = {name: film.mean() for name, film in films.items()}
    assert means["nih"] > means["mimic"] > means["chexpert"]  # NIH brighter, CheXpert darker
    for first, second in (("mimic", "chexpert"), ("mimic", "nih"), ("chexpert", "nih")):
        assert np.abs(films[first] - films[second]).mean() > 8.0  # a visible shift in style
        assert np.corrcoef(films[first].ravel(), films[second].ravel())[0, 1] > 0.8  # of the same film


@pytest.mark.parametrize("label", [label for label in CHEXPERT_LABELS if label != NO_FINDING])
def test_each_finding_is_visible_at_224_pixels(label):
    """The same patient with and without the finding differs clearly over a sizeable area."""
    for seed in range(5):
        clean = render_frontal([], np.random.default_rng(seed), 256).density
        finding = render_frontal([label], np.random.default_rng(seed), 256).density
        difference = np.abs(np.asarray(Image.fromarray(finding - clean, mode="F").resize((224, 224))))
        assert difference.max() > 0.18, (label, seed)
        assert (difference > 0.1).sum() >= 60, (label, seed)  # at least ~8x8 pixels of clear change


def test_combinations_follow_the_cooccurrence_table():
    table = CooccurrenceTable.load()
    rng = np.random.default_rng(0)
    draws = [table.sample(rng)[0] for _ in range(4000)]
    most_common = table.combinations[0]
    share = sum(draw == most_common for draw in draws) / len(draws)
    assert share == pytest.approx(table.probabilities[0], abs=0.02)
    effusion = sum("Pleural Effusion" in draw for draw in draws) / len(draws)
    assert 0.3 < effusion < 0.5  # ~40% of real CheXpert frontal films


def test_committed_table_is_what_the_script_derives():
    csv_path = torchxrayvision_chexpert_csv()
    if not csv_path.is_file():
        pytest.skip("torchxrayvision's chexpert_train.csv.gz is not installed")
    committed = json.loads(COOCCURRENCE_TABLE.read_text())
    derived = derive_cooccurrence(csv_path, committed["min_count"])
    assert derived == committed


@pytest.mark.parametrize(("n", "size", "message"), [(0, 256, "--n must be at least 1"), (3, 16, "--size")])
def test_bad_arguments(tmp_path, n, size, message):
    with pytest.raises(UserError, match=message):
        make_phantoms(tmp_path / "out", n=n, size=size)


def test_unwritable_out_is_a_user_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot write to --out"):
        make_phantoms(blocker / "phantoms", n=2)
    with pytest.raises(UserError, match="is not a folder"):
        make_phantoms(blocker, n=2)
