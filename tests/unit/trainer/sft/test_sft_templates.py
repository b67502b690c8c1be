"""Synthetic SFT targets and SFT manifests: every format parses back to its labels, the text varies,
manifests without targets are refused, and validation patients are held out whole."""

import json
import random

import pytest

from rewards.parsing import parse_completion
from shared.errors import UserError
from shared.labels import CHEXPERT_LABELS
from shared.manifest import ManifestRecord, read_manifest, write_manifest
from shared.prompts import SFT_OUTPUT_FORMATS
from trainer.sft.data import hold_out_patients, read_sft_manifest
from trainer.templates import synthetic_target, with_synthetic_targets, write_synthetic_sft_manifest

FINDINGS = [label for label in CHEXPERT_LABELS if label != "No Finding"]


@pytest.mark.parametrize("sft_format", SFT_OUTPUT_FORMATS)
def test_every_format_parses_back_to_its_labels(sft_format):
    rng = random.Random(0)
    for _ in range(40):
        labels = rng.sample(FINDINGS, rng.randint(0, 4))
        result = parse_completion(synthetic_target(labels, sft_format, rng))
        assert result.valid and result.labels
        assert sorted(result.labels) == sorted(labels or ["No Finding"])


@pytest.mark.parametrize("sft_format", [name for name in SFT_OUTPUT_FORMATS if name != "only_label"])
def test_targets_vary_between_images_with_the_same_labels(sft_format):  # only_label: no rationale
    labels = ["Edema", "Pleural Effusion", "Support Devices"]
    texts = {synthetic_target(labels, sft_format, random.Random(seed)) for seed in range(12)}
    assert len(texts) >= 6


def test_formats_are_told_apart():
    labels = ["Cardiomegaly", "Atelectasis"]
    texts = {name: synthetic_target(labels, name, random.Random(0)) for name in SFT_OUTPUT_FORMATS}
    assert len(texts["only_label"]) < len(texts["free_reasoning"])
    assert "12. Summary" in texts["reasoning_a_sft"] and "Summary" not in texts["reasoning_narrative"]


def test_an_unknown_format_is_refused():
    with pytest.raises(UserError, match="only_label"):
        synthetic_target(["Edema"], "reasoning_b", random.Random(0))


def test_synthetic_manifest_keeps_images_reachable(phantom_root, tmp_path):
    source = phantom_root / "manifests" / "mimic_train.jsonl"
    out = write_synthetic_sft_manifest(source, tmp_path / "elsewhere" / "sft.jsonl", "free_reasoning", seed=3)
    records = read_sft_manifest(out)
    assert len(records) == len(read_manifest(source))
    assert all(record.image_path(out.parent).is_file() for record in records)
    # the same seed and record id give the same text, whatever the order
    again = with_synthetic_targets(reversed(read_manifest(source)), "free_reasoning", seed=3)
    assert {r.id: r.target for r in again} == {r.id: r.target for r in records}


def record(number: int, subject: str, target: str | None = "<think>x</think>\n<solution>Edema</solution>"):
    return ManifestRecord(
        id=f"img{number}",
        image=f"img{number}.jpg",
        labels=["Edema"],
        target=target,
        metadata={"subject_id": subject},
    )


def test_a_record_without_target_is_named(tmp_path):
    path = write_manifest([record(1, "a"), record(2, "a", target=None)], tmp_path / "sft.jsonl")
    (tmp_path / "img1.jpg").write_bytes(b"")
    with pytest.raises(UserError, match=r"record 2 \(id 'img2'\) has no 'target'"):
        read_sft_manifest(path)


def test_a_missing_image_is_named_before_training(tmp_path):
    path = write_manifest([record(1, "a")], tmp_path / "sft.jsonl")
    with pytest.raises(UserError, match=r"record 1 \(id 'img1'\): image not found: .*img1.jpg"):
        read_sft_manifest(path)


def test_an_empty_manifest_is_refused(tmp_path):
    (tmp_path / "sft.jsonl").write_text("")
    with pytest.raises(UserError, match="no records"):
        read_sft_manifest(tmp_path / "sft.jsonl")


def test_sft_manifest_paths_become_absolute(tmp_path):
    path = write_manifest([record(1, "a")], tmp_path / "data" / "sft.jsonl")
    (tmp_path / "data" / "img1.jpg").write_bytes(b"")
    assert read_sft_manifest(path)[0].image == str((tmp_path / "data" / "img1.jpg").resolve())


def test_validation_holds_out_whole_patients_reproducibly():
    records = [record(i, f"p{i // 3}") for i in range(60)]  # 20 patients, 3 images each
    train, val = hold_out_patients(records, 0.1, seed=0)
    train_patients = {r.metadata["subject_id"] for r in train}
    val_patients = {r.metadata["subject_id"] for r in val}
    assert len(val_patients) == 2 and not train_patients & val_patients
    assert len(train) + len(val) == 60 and len(val) == 6
    assert hold_out_patients(records, 0.1, seed=0) == (train, val)
    assert {r.id for r in hold_out_patients(records, 0.1, seed=1)[1]} != {r.id for r in val}


def test_a_single_patient_cannot_be_split():
    with pytest.raises(UserError, match="single patient"):
        hold_out_patients([record(1, "a"), record(2, "a")], 0.1, seed=0)


def test_records_json_roundtrip_keeps_targets(tmp_path):
    path = write_manifest(with_synthetic_targets([record(1, "a", None)], "only_label"), tmp_path / "m.jsonl")
    assert json.loads(path.read_text())["target"].startswith("<think>")


def test_the_tiny_models_checklist_answers_every_label_once_and_agrees_with_its_solution():
    """label_checklist: each finding with yes or no in CheXpert order, No Finding last (it sums up),
    then the present labels: the decision for each label sits at a fixed place in the answer."""
    from rewards.parsing import parse_completion
    from shared.labels import CHEXPERT_LABELS

    for labels in (["Cardiomegaly", "Pleural Effusion"], ["No Finding"]):
        target = synthetic_target(labels, "label_checklist", random.Random(0))
        parsed = parse_completion(target)
        assert parsed.valid and parsed.labels == labels
        decisions = dict(item.rsplit(" ", 1) for item in parsed.think.split(", "))
        assert list(decisions) == [
            *[label for label in CHEXPERT_LABELS if label != "No Finding"],
            "No Finding",
        ]
        assert {label for label, answer in decisions.items() if answer == "yes"} == set(labels)
