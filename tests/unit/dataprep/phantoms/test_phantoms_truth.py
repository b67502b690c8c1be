"""Each phantom format, read back through its CSV files by the real loaders, gives the labels the
generator drew (phantom_truth.jsonl)."""

import json
from pathlib import Path

import pytest

from dataprep.chexpert import load_chexpert
from dataprep.loading import LoadOptions
from dataprep.mimic import load_mimic
from dataprep.nih import load_nih
from dataprep.phantoms.plan import PhantomCase
from shared.images import load_xray
from shared.labels import CHEXPERT_LABELS, map_nih_labels
from shared.manifest import read_manifest

QUIET = LoadOptions(progress=False)


@pytest.fixture(scope="module")
def truth(phantom_root) -> list[PhantomCase]:
    lines = (phantom_root / "phantom_truth.jsonl").read_text().splitlines()
    return [PhantomCase.model_validate_json(line) for line in lines]


def in_chexpert_order(labels) -> list[str]:
    return [label for label in CHEXPERT_LABELS if label in set(labels)]


def test_truth_covers_every_study(truth):
    assert [case.case for case in truth] == list(range(48))
    assert any(case.uncertain for case in truth), "phantoms must carry some -1 labels"
    assert any(case.mimic_lateral for case in truth) and any(case.extra_ap for case in truth)


def test_mimic_loader_finds_the_drawn_labels(phantom_root, truth):
    result = load_mimic(phantom_root / "mimic", QUIET)
    records = {record.id: record for record in result.records}
    assert len(records) == len(truth)  # one frontal per study; laterals and extra AP films left out
    assert result.report.skipped.get("view not selected") == sum(case.mimic_lateral for case in truth)
    assert result.report.skipped.get("other image of study chosen", 0) == sum(case.extra_ap for case in truth)
    assert not set(result.report.skipped) - {"view not selected", "other image of study chosen"}
    for case in truth:
        record = records[case.mimic_dicom_ids["frontal"]]  # the PA film when the study has an extra AP
        assert record.labels == in_chexpert_order(case.positives), case.case
        assert record.metadata["uncertain"] == in_chexpert_order(case.uncertain)
        assert record.metadata["view"] == case.frontal_view
        assert record.split == case.mimic_split


def test_mimic_u_ones_adds_exactly_the_uncertain_labels(phantom_root, truth):
    records = {
        record.id: record
        for record in load_mimic(
            phantom_root / "mimic", LoadOptions(uncertain="ones", progress=False)
        ).records
    }
    for case in truth:
        assert records[case.mimic_dicom_ids["frontal"]].labels == in_chexpert_order(
            {*case.positives, *case.uncertain}
        )


def test_chexpert_loader_finds_the_drawn_labels(phantom_root, truth):
    result = load_chexpert(phantom_root / "chexpert", QUIET)
    records = {record.id: record for record in result.records}
    assert len(records) == len(truth)
    assert result.report.skipped == (
        {"view not selected": sum(case.chexpert_lateral for case in truth)}
        if any(case.chexpert_lateral for case in truth)
        else {}
    )
    for case in truth:
        record = records[case.chexpert_path]
        assert record.labels == in_chexpert_order(case.positives)
        assert record.split == case.chexpert_split
        # valid.csv, like CheXpert's, holds only 0 and 1.
        expected_uncertain = in_chexpert_order(case.uncertain) if case.chexpert_split == "train" else []
        assert record.metadata["uncertain"] == expected_uncertain


def test_nih_loader_finds_the_drawn_labels(phantom_root, truth):
    result = load_nih(phantom_root / "nih", QUIET)
    records = {record.id: record for record in result.records}
    assert len(records) == len(truth) and not result.report.skipped
    for case in truth:
        record = records[case.nih_image]
        assert record.metadata["nih_labels"] == case.nih_labels
        assert record.labels == map_nih_labels(case.nih_labels, 9)
        assert record.split == ("test" if case.nih_split == "test" else "train_val")
        if "Lung Lesion" in case.positives:
            assert case.drawn["Lung Lesion"]["nih"] in case.nih_labels


def test_manifests_match_the_loaders_and_point_at_real_images(phantom_root, truth):
    manifest_dir = phantom_root / "manifests"
    summary = json.loads((phantom_root / "phantoms.json").read_text())
    names = sorted(path.name for path in manifest_dir.glob("*.jsonl"))
    assert names == sorted(summary["manifests"])
    assert {
        "mimic_train.jsonl",
        "mimic_validate.jsonl",
        "mimic_test.jsonl",
        "chexpert_valid.jsonl",
        "nih_test.jsonl",
    } <= set(names)
    total = {source: 0 for source in ("mimic", "chexpert", "nih")}
    for name in names:
        records = read_manifest(manifest_dir / name)
        assert len(records) == summary["manifests"][name]
        source, split = name.removesuffix(".jsonl").split("_", 1)
        total[source] += len(records)
        assert {record.split for record in records} == {split}
        first = records[0]
        assert not Path(first.image).is_absolute()  # the phantom folder can be moved
        image = load_xray(first.image_path(manifest_dir))
        assert image.size == (256, 256) and image.mode == "RGB"
    assert total == {"mimic": 48, "chexpert": 48, "nih": 48}
