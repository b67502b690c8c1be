"""The loaders against hand-written CSVs with one malformed case per row (tests/data/loaders/)."""

import shutil
from pathlib import Path

import pytest

from dataprep.chexpert import load_chexpert
from dataprep.loading import LoadOptions, parse_label_value
from dataprep.mimic import load_mimic
from dataprep.nih import load_nih
from shared.errors import UserError
from shared.images import load_xray

DATA = Path(__file__).resolve().parents[2] / "data" / "loaders"
QUIET = {"progress": False}


def copy_layout(name: str, tmp_path: Path, dicom_source: Path | None = None) -> Path:
    """Copy a test layout and create the images its images.txt lists (tiny JPEG/PNG, or a real DICOM)."""
    from PIL import Image

    root = tmp_path / name
    shutil.copytree(DATA / name, root)
    for relative in (root / "images.txt").read_text().split():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".dcm":
            shutil.copy(dicom_source, path)
        else:
            Image.new("L", (16, 16), 90).save(path)
    return root


def by_id(result):
    return {record.id: record for record in result.records}


# ---------------------------------------------------------------------------------------------
# MIMIC-CXR-JPG
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def mimic_root(tmp_path, rg1_dicom_path) -> Path:
    return copy_layout("mimic", tmp_path, rg1_dicom_path)


def test_mimic_skips_each_malformed_case_and_picks_pa(mimic_root):
    result = load_mimic(mimic_root, LoadOptions(**QUIET))
    records = by_id(result)
    assert sorted(records) == ["d1-pa", "d10-dcm", "d2-ap"]
    assert result.report.skipped == {
        "malformed row": 1,
        "missing image": 1,
        "no labels for study": 1,
        "other image of study chosen": 1,
        "unknown view": 2,
        "unparseable label value": 1,
        "view not selected": 1,
    }
    assert records["d1-pa"].labels == ["Edema"]  # Atelectasis is -1: negative under U-Zeros
    assert records["d1-pa"].metadata["uncertain"] == ["Atelectasis"]
    assert records["d1-pa"].split == "train"
    assert records["d2-ap"].labels == ["No Finding"]
    assert records["d10-dcm"].labels == ["Cardiomegaly", "Pleural Effusion", "Support Devices"]
    examples = result.report.examples
    assert examples["unparseable label value"][0].startswith("mimic-cxr-2.0.0-chexpert.csv:4:")
    assert "Cardiomegaly='x'" in examples["unparseable label value"][0]
    assert examples["missing image"][0].startswith("mimic-cxr-2.0.0-metadata.csv:7:")
    assert examples["no labels for study"][0].startswith("mimic-cxr-2.0.0-metadata.csv:8:")
    assert examples["malformed row"][0].startswith("mimic-cxr-2.0.0-metadata.csv:11:")
    assert result.report.prevalence["Edema"] == 1 and result.report.prevalence["Lung Opacity"] == 0


def test_mimic_reads_dicom_files_in_the_jpg_layout(mimic_root):
    record = by_id(load_mimic(mimic_root, LoadOptions(**QUIET)))["d10-dcm"]
    assert record.image.endswith("d10-dcm.dcm")
    image = load_xray(record.image)
    assert image.mode == "RGB" and min(image.size) > 64


@pytest.mark.parametrize(
    ("policy", "expected_labels", "masked"),
    [
        ("zeros", ["Cardiomegaly", "Pleural Effusion", "Support Devices"], None),
        ("ones", ["Cardiomegaly", "Lung Opacity", "Pleural Effusion", "Support Devices"], None),
        ("drop", ["Cardiomegaly", "Pleural Effusion", "Support Devices"], ["Lung Opacity"]),
    ],
)
def test_mimic_uncertainty_policies(mimic_root, policy, expected_labels, masked):
    record = by_id(load_mimic(mimic_root, LoadOptions(uncertain=policy, **QUIET)))["d10-dcm"]
    assert record.labels == expected_labels
    assert record.metadata["uncertain"] == ["Lung Opacity"]
    assert record.metadata.get("masked") == masked


def test_mimic_view_preference_and_all_images(mimic_root):
    ap_first = by_id(load_mimic(mimic_root, LoadOptions(views=("AP", "PA"), **QUIET)))
    assert "d1-ap" in ap_first and "d1-pa" not in ap_first
    everything = by_id(
        load_mimic(mimic_root, LoadOptions(views=("PA", "AP", "LATERAL"), one_per_study=False, **QUIET))
    )
    assert {"d1-ap", "d1-pa", "d1-lat"} <= set(everything)


def test_mimic_labelled_test_set_reads_airspace_opacity_as_lung_opacity(mimic_root):
    result = load_mimic(
        mimic_root, LoadOptions(**QUIET), labels_file=Path("mimic-cxr-2.1.0-test-set-labeled.csv")
    )
    records = by_id(result)
    assert records["d1-pa"].labels == ["Lung Opacity", "Edema"]
    assert records["d2-ap"].labels == ["No Finding"]
    assert "d10-dcm" not in records
    assert result.report.skipped["no labels for study"] == 4


def test_mimic_strict_raises_naming_file_and_line(mimic_root):
    with pytest.raises(UserError, match=r"mimic-cxr-2\.0\.0-chexpert\.csv:4: unparseable label value"):
        load_mimic(mimic_root, LoadOptions(strict=True, **QUIET))


def test_mimic_missing_metadata_is_a_clear_error(mimic_root):
    (mimic_root / "mimic-cxr-2.0.0-metadata.csv").unlink()
    with pytest.raises(UserError, match="metadata.csv not found"):
        load_mimic(mimic_root, LoadOptions(**QUIET))


# ---------------------------------------------------------------------------------------------
# CheXpert
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def chexpert_root(tmp_path) -> Path:
    return copy_layout("chexpert", tmp_path)


def test_chexpert_skips_each_malformed_case(chexpert_root):
    result = load_chexpert(chexpert_root, LoadOptions(**QUIET))
    records = by_id(result)
    train = "CheXpert-v1.0-small/train/"
    assert sorted(records) == sorted(
        [
            train + "patient00001/study1/view1_frontal.jpg",
            train + "patient00005/study1/view1_frontal.jpg",
            train + "patient00006/study1/view1_frontal.jpg",
            train + "patient00007/study1/view1_frontal.jpg",
            "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg",
            "CheXpert-v1.0-small/valid/patient64542/study1/view1_frontal.jpg",
            "CheXpert-v1.0-small/test/patient64741/study1",
            "CheXpert-v1.0-small/test/patient64743/study1/view1_frontal.jpg",
        ]
    )
    assert result.report.skipped == {
        "duplicate image": 1,
        "missing image": 2,  # train.csv:4, and test.csv's study with only a lateral film
        "unknown view": 2,  # train.csv "Oblique", test_labels.csv image1.jpg (no view in the name)
        "unparseable label value": 1,
        "view not selected": 2,
    }
    assert records[train + "patient00001/study1/view1_frontal.jpg"].labels == ["Edema"]
    assert records[train + "patient00006/study1/view1_frontal.jpg"].labels == []
    blank_ap_pa = records[train + "patient00007/study1/view1_frontal.jpg"]
    assert blank_ap_pa.labels == ["Lung Opacity", "Pleural Effusion"]
    assert blank_ap_pa.metadata["view"] == "FRONTAL"
    assert {record.split for record in result.records} == {"train", "valid", "test"}
    examples = result.report.examples
    assert examples["missing image"][0].startswith("train.csv:4:")
    assert examples["unknown view"][0].startswith("train.csv:5:")
    assert "Cardiomegaly='maybe'" in examples["unparseable label value"][0]
    assert examples["duplicate image"][0].startswith("train.csv:10:")


def test_chexpert_reordered_columns_read_by_name(chexpert_root):
    records = by_id(load_chexpert(chexpert_root, LoadOptions(**QUIET)))
    first = records["CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg"]
    assert first.labels == ["Lung Opacity", "Pleural Effusion", "Support Devices"]
    assert (
        first.metadata["sex"] == "Male" and first.metadata["age"] == "73" and first.metadata["view"] == "AP"
    )
    assert records["CheXpert-v1.0-small/valid/patient64542/study1/view1_frontal.jpg"].labels == ["No Finding"]


def test_chexpert_study_level_csv_picks_the_frontal_film(chexpert_root):
    result = load_chexpert(chexpert_root, LoadOptions(**QUIET), csv_files=[Path("test.csv")])
    (record,) = result.records
    assert record.image.endswith("patient64741/study1/view1_frontal.jpg")
    assert record.labels == ["Cardiomegaly", "Atelectasis"]
    assert any("no column for" in note for note in result.report.notes)


@pytest.mark.parametrize(
    ("policy", "labels"),
    [
        ("zeros", ["Cardiomegaly", "Support Devices"]),
        ("ones", ["Cardiomegaly", "Atelectasis", "Support Devices"]),
    ],
)
def test_chexpert_uncertainty_policies(chexpert_root, policy, labels):
    records = by_id(
        load_chexpert(chexpert_root, LoadOptions(uncertain=policy, **QUIET), csv_files=[Path("train.csv")])
    )
    assert records["CheXpert-v1.0-small/train/patient00005/study1/view1_frontal.jpg"].labels == labels


def test_chexpert_resolves_paths_from_inside_the_release_folder(tmp_path):
    # The real layout: root is CheXpert-v1.0-small/ itself and Path starts with that folder's name.
    outer = copy_layout("chexpert", tmp_path)
    release = outer / "CheXpert-v1.0-small"
    shutil.copy(outer / "valid.csv", release / "valid.csv")
    result = load_chexpert(release, LoadOptions(**QUIET), csv_files=[Path("valid.csv")])
    assert len(result.records) == 2 and not result.report.skipped


def test_chexpert_strict_raises_naming_file_and_line(chexpert_root):
    with pytest.raises(UserError, match=r"train\.csv:4: missing image"):
        load_chexpert(chexpert_root, LoadOptions(strict=True, **QUIET))


def test_chexpert_file_without_path_column_is_a_clear_error(tmp_path):
    (tmp_path / "train.csv").write_text("Image,Edema\na.jpg,1.0\n")
    with pytest.raises(UserError, match=r"train\.csv: missing column\(s\) \['Path'\]"):
        load_chexpert(tmp_path, LoadOptions(**QUIET))


# ---------------------------------------------------------------------------------------------
# NIH ChestX-ray14
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def nih_root(tmp_path) -> Path:
    return copy_layout("nih", tmp_path)


def test_nih_skips_each_malformed_case(nih_root):
    result = load_nih(nih_root, LoadOptions(**QUIET))
    records = by_id(result)
    assert sorted(records) == ["00000001_000.png", "00000002_000.png", "00000006_000.png", "00000007_000.png"]
    assert result.report.skipped == {
        "duplicate image": 1,
        "missing image": 1,
        "unknown label": 1,
        "unknown view": 1,
    }
    assert records["00000001_000.png"].labels == ["Lung Lesion"]  # Effusion is not among the nine
    assert records["00000001_000.png"].metadata["nih_labels"] == ["Effusion", "Mass"]
    assert records["00000006_000.png"].labels == []  # Infiltration has no CheXpert counterpart
    assert records["00000006_000.png"].image.endswith("images_002/00000006_000.png")
    assert records["00000007_000.png"].labels == ["Atelectasis", "Pleural Other"]
    assert records["00000001_000.png"].split == "train_val" and records["00000007_000.png"].split == "test"
    assert "Pneumonitis" in result.report.examples["unknown label"][0]
    assert result.report.examples["unknown label"][0].startswith("Data_Entry_2017.csv:4:")
    assert set(result.report.prevalence) == {
        "No Finding", "Cardiomegaly", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis",
        "Pneumothorax", "Pleural Other",
    }  # fmt: skip


def test_nih_ten_categories_adds_effusion(nih_root):
    records = by_id(load_nih(nih_root, LoadOptions(nih_categories=10, **QUIET)))
    assert records["00000001_000.png"].labels == ["Lung Lesion", "Pleural Effusion"]


def test_nih_strict_raises_naming_file_and_line(nih_root):
    with pytest.raises(UserError, match=r"Data_Entry_2017\.csv:4: unknown label"):
        load_nih(nih_root, LoadOptions(strict=True, **QUIET))


# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value"), [("", 0), ("0.0", 0), ("1", 1), (" 1.0 ", 1), ("-1.0", -1), ("-1", -1), ("1.00", 1)]
)
def test_label_values(text, value):
    assert parse_label_value(text) == value


@pytest.mark.parametrize("text", ["maybe", "2.0", "0.5", "nan?"])
def test_bad_label_values(text):
    with pytest.raises(ValueError):
        parse_label_value(text)


def test_unknown_view_option_is_rejected():
    with pytest.raises(ValueError, match="unknown view"):
        LoadOptions(views=("SIDEWAYS",))
