"""`cxr-rl data split` keeps unlabelled studies out (and counts them), writes a reserve for rejected
traces, and carves a patient-disjoint validation split out of real NIH and CheXpert rows, beside
their official test split."""

import json

import pytest

from dataprep.loading import LoadOptions
from dataprep.mimic import load_mimic
from dataprep.phantoms.datasets import make_phantoms
from dataprep.split import SplitConfig, patient_of, split_mimic
from shared.manifest import read_manifest
from tests.real_rows import chexpert_copy, nih_copy, nih_test_images
from tests.unit.dataprep.test_data_cli import cxr_rl


@pytest.fixture(scope="module")
def mimic_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantoms")
    make_phantoms(root, n=160, seed=1, size=64)
    out = root / "split"
    report = split_mimic(root / "mimic", out, SplitConfig(sft=50, rl=30, val=20, seed=3))
    records = load_mimic(root / "mimic", LoadOptions(progress=False)).records
    return report, out, records


def test_studies_without_any_label_stay_out_of_the_split_and_are_counted(mimic_split):
    report, out, records = mimic_split
    unlabelled = [r for r in records if not r.labels and r.split in ("train", "validate")]
    assert unlabelled, "the phantoms should hold studies without a label"
    assert report.excluded == {"no label": len(unlabelled)}
    assert report.sizes == {"sft": 50, "rl": 30, "val": 20}  # every set reaches its size
    for name in ("sft", "rl", "val", "sft_reserve", "mimic_test"):
        assert all(record.labels for record in read_manifest(out / f"{name}.jsonl")), name


def test_the_reserve_shares_no_patient_with_rl_or_validation(mimic_split):
    report, out, _ = mimic_split
    reserve = read_manifest(out / "sft_reserve.jsonl")
    assert len(reserve) == report.reserve > 0
    taken = {r.id for name in ("sft", "rl", "val") for r in read_manifest(out / f"{name}.jsonl")}
    assert not taken & {r.id for r in reserve}
    others = {patient_of(r) for name in ("rl", "val") for r in read_manifest(out / f"{name}.jsonl")}
    assert not others & {patient_of(r) for r in reserve}
    test = read_manifest(out / "mimic_test.jsonl")
    assert len(test) == report.test_images and {r.split for r in test} == {"test"}


def test_an_nih_copy_gives_a_patient_disjoint_validation_split_and_its_test_split(tmp_path):
    root = nih_copy(tmp_path / "nih")
    out = tmp_path / "split"
    result = cxr_rl("data", "split", "--nih-root", str(root), "--out", str(out), "--external-val", "200")
    assert result.returncode == 0, result.stderr
    val, test = read_manifest(out / "nih_val.jsonl"), read_manifest(out / "nih_test.jsonl")
    assert len(val) == 200 and {r.id for r in test} == nih_test_images(root)
    assert not {patient_of(r) for r in val} & {patient_of(r) for r in test}
    assert {r.metadata["official_split"] for r in val} == {"train_val"}
    report = json.loads((out / "split_report.json").read_text())["nih"]
    # Real NIH patients have images on both sides of Google's test draw: those stay out of validation.
    test_patients = {patient_of(r) for r in test}
    loaded = [line for line in (root / "train_val_list.txt").read_text().split()]
    same_patient = [name for name in loaded if name.split("_")[0].lstrip("0") in test_patients]
    assert report["excluded"]["patient in the test split"] == len(same_patient) > 0
    assert json.loads(result.stdout.strip().splitlines()[-1])["nih"]["sizes"] == {
        "val": 200,
        "test": len(test),
    }


def test_a_chexpert_copy_reports_on_its_test_csv_or_says_it_used_valid(tmp_path):
    with_test = chexpert_copy(tmp_path / "a" / "chexpert", rows=500, test_rows=80)
    out = tmp_path / "split-a"
    result = cxr_rl(
        "data", "split", "--chexpert-root", str(with_test), "--out", str(out), "--external-val", "60"
    )
    assert result.returncode == 0, result.stderr
    test = read_manifest(out / "chexpert_test.jsonl")
    assert test and {r.split for r in test} == {"test"}
    assert not {patient_of(r) for r in read_manifest(out / "chexpert_val.jsonl")} & {
        patient_of(r) for r in test
    }
    only_train = chexpert_copy(tmp_path / "b" / "chexpert", rows=500)
    result = cxr_rl("data", "split", "--chexpert-root", str(only_train), "--out", str(tmp_path / "b-split"))
    assert result.returncode == 1 and "no official test split found" in result.stderr


def test_split_needs_a_copy(tmp_path):
    result = cxr_rl("data", "split", "--out", str(tmp_path))
    assert result.returncode == 1 and "--mimic-root, --nih-root or --chexpert-root" in result.stderr
