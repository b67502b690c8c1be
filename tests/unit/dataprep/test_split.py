"""The SFT / RL / validation split: exact sizes, deterministic for a seed, disjoint by image and by
patient, and stratified so every label with enough prevalence is in every set."""

from collections import Counter

import numpy as np
import pytest

from dataprep.phantoms.datasets import make_phantoms
from dataprep.split import SplitConfig, draw_split, patient_of, split_mimic
from shared.errors import UserError
from shared.labels import CHEXPERT_LABELS
from shared.manifest import ManifestRecord, read_manifest

SIZES = {"sft": 300, "rl": 150, "val": 60}


def synthetic_pool(images: int = 1200, seed: int = 0) -> list[ManifestRecord]:
    """Patients with 1-6 studies; labels with prevalences from 40% down to ~1%."""
    rng = np.random.default_rng(seed)
    prevalence = dict(
        zip(
            CHEXPERT_LABELS,
            [0.1, 0.05, 0.12, 0.4, 0.03, 0.25, 0.07, 0.02, 0.15, 0.09, 0.38, 0.012, 0.035, 0.5],
            strict=True,
        )
    )
    records, patient = [], 0
    while len(records) < images:
        for _ in range(int(rng.integers(1, 7))):
            labels = [label for label, share in prevalence.items() if rng.random() < share]
            index = len(records)
            records.append(
                ManifestRecord(
                    id=f"img{index:05d}",
                    image=f"/data/img{index:05d}.jpg",
                    labels=labels,
                    source="mimic",
                    split="train",
                    metadata={"subject_id": str(10_000_000 + patient)},
                )
            )
        patient += 1
    return records[:images]


@pytest.fixture(scope="module")
def pool() -> list[ManifestRecord]:
    return synthetic_pool()


@pytest.fixture(scope="module")
def drawn(pool):
    return draw_split(pool, SIZES, seed=7)


def test_sizes_are_exact(drawn):
    assert {name: len(records) for name, records in drawn.items()} == SIZES
    assert all(record.split == name for name, records in drawn.items() for record in records)
    assert all(
        record.metadata["official_split"] == "train" for records in drawn.values() for record in records
    )


def test_disjoint_by_image_and_by_patient(drawn):
    ids = [record.id for records in drawn.values() for record in records]
    assert len(ids) == len(set(ids))
    patients = {name: {patient_of(record) for record in records} for name, records in drawn.items()}
    assert not patients["sft"] & patients["rl"]
    assert not patients["sft"] & patients["val"]
    assert not patients["rl"] & patients["val"]


def test_deterministic_for_a_seed(pool, drawn):
    again = draw_split(pool, SIZES, seed=7)
    other = draw_split(pool, SIZES, seed=8)
    assert {name: [r.id for r in records] for name, records in again.items()} == {
        name: [r.id for r in records] for name, records in drawn.items()
    }
    assert [r.id for r in other["val"]] != [r.id for r in drawn["val"]]


def test_every_label_present_in_every_set(pool, drawn):
    pool_counts = Counter(label for record in pool for label in record.labels)
    for name, records in drawn.items():
        counts = Counter(label for record in records for label in record.labels)
        for label in CHEXPERT_LABELS:
            if pool_counts[label] >= 3 * len(SIZES):
                assert counts[label] > 0, (name, label)


def label_share_error(pool: list[ManifestRecord], sets: dict[str, list[ManifestRecord]]) -> float:
    """Mean |share of a label in a set - share in the pool| over labels and sets."""
    errors = []
    for label in CHEXPERT_LABELS:
        pool_share = sum(label in record.labels for record in pool) / len(pool)
        for records in sets.values():
            errors.append(abs(sum(label in record.labels for record in records) / len(records) - pool_share))
    return float(np.mean(errors))


def random_patient_draw(pool: list[ManifestRecord], seed: int) -> dict[str, list[ManifestRecord]]:
    """The baseline: whole patients in random order, cut into the asked sizes."""
    by_patient: dict[str, list[ManifestRecord]] = {}
    for record in pool:
        by_patient.setdefault(patient_of(record), []).append(record)
    patients = sorted(by_patient)
    order = np.random.default_rng(seed).permutation(len(patients))
    flat = [record for index in order for record in by_patient[patients[index]]]
    sets, start = {}, 0
    for name, size in SIZES.items():
        sets[name] = flat[start : start + size]
        start += size
    return sets


def test_prevalence_tracks_the_pool_better_than_random(pool, drawn):
    for name, records in drawn.items():
        for label in ("Lung Opacity", "Pleural Effusion", "Support Devices", "Edema"):
            share = sum(label in record.labels for record in records) / len(records)
            pool_share = sum(label in record.labels for record in pool) / len(pool)
            assert share == pytest.approx(pool_share, abs=0.08), (name, label)
    stratified = np.mean([label_share_error(pool, draw_split(pool, SIZES, seed)) for seed in range(4)])
    random = np.mean([label_share_error(pool, random_patient_draw(pool, seed)) for seed in range(4)])
    assert stratified < 0.6 * random, (stratified, random)


def test_rare_label_beats_random_sampling(pool):
    """The rarest label (Pleural Other, ~1%) lands in the small validation set for every seed,
    which a plain random draw of 60 images misses about half the time."""
    for seed in range(5):
        val = draw_split(pool, SIZES, seed=seed)["val"]
        assert any("Pleural Other" in record.labels for record in val), seed


def test_asking_for_more_than_the_pool_is_a_clear_error(pool):
    with pytest.raises(UserError, match=r"the pool has 1200 usable images but 1500 were asked for"):
        draw_split(pool, {"sft": 1000, "rl": 400, "val": 100}, seed=0)


def test_the_whole_pool_can_be_split(pool):
    sets = draw_split(pool, {"sft": 700, "rl": 400, "val": 100}, seed=1)
    assert sum(len(records) for records in sets.values()) == len(pool)


def test_split_mimic_writes_manifests_from_a_phantom_copy(tmp_path):
    make_phantoms(tmp_path / "phantoms", n=160, seed=1, size=64)
    report = split_mimic(
        tmp_path / "phantoms" / "mimic", tmp_path / "split", SplitConfig(sft=60, rl=30, val=20, seed=3)
    )
    assert report.sizes == {"sft": 60, "rl": 30, "val": 20}
    sets = {name: read_manifest(tmp_path / "split" / f"{name}.jsonl") for name in ("sft", "rl", "val")}
    assert {name: len(records) for name, records in sets.items()} == report.sizes
    official = {record.metadata["official_split"] for records in sets.values() for record in records}
    assert official <= {"train", "validate"}  # the official test split is kept for evaluation
    subjects = [{record.metadata["subject_id"] for record in records} for records in sets.values()]
    assert not (subjects[0] & subjects[1] or subjects[0] & subjects[2] or subjects[1] & subjects[2])
    assert report.seed == 3 and (tmp_path / "split" / "sft_reserve.jsonl").is_file()
    with pytest.raises(
        UserError,
        match=r"usable images \(one frontal per study, official splits train, validate, \d+ studies without "
        r"any label left out\) but 900 were asked for",
    ):
        split_mimic(
            tmp_path / "phantoms" / "mimic", tmp_path / "split2", SplitConfig(sft=600, rl=200, val=100)
        )
