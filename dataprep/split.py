"""Drawing the SFT, RL and validation sets from MIMIC-CXR-JPG: disjoint by patient, stratified so
rare labels are present in every set, exactly the sizes asked, the same for the same seed.

Method (iterative stratification, Sechidis et al. 2011, over patients instead of images):
1. The pool is one frontal image per study from the chosen official splits; images are grouped
   by patient, and the groups shuffled with the seed. An "unused" set takes what is left over, so
   every set, unused included, has a target share of each label.
2. Presence first: for each label, rarest first, every set still lacking it gets one patient
   with that label (when the pool has enough such patients).
3. Then, rarest label first, each patient with that label goes to the set that still wants the
   most of it relative to the set's size, counting the patient's other labels at half weight
   (on a synthetic pool this halves the label-share error of plain Sechidis, see tests).
4. A patient with more images than a set has room for is cut: the images that fit go to the set,
   the rest stay unused, so no patient is ever in two of SFT / RL / validation.

Studies with no label at all (not even No Finding: every cell blank, 0 or an uncertain -1 under
U-Zeros) carry no answer to learn or score: they stay out of the pool and are counted in the
report, so every set reaches its size with labelled studies. The patients no set took become a
reserve (`sft_reserve.jsonl`), patient-disjoint from RL and validation, from which `cxr-rl traces
--reserve` replaces the SFT records whose traces are rejected.
"""

import json
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from dataprep.loading import LoadOptions
from dataprep.mimic import load_mimic
from shared.atomic_files import write_atomically
from shared.config import StrictModel
from shared.errors import UserError
from shared.labels import CHEXPERT_LABELS
from shared.manifest import ManifestRecord, write_manifest

SET_NAMES = ("sft", "rl", "val")
UNUSED = "unused"
NO_LABEL = "no label"  # excluded: a study with no positive label, not even No Finding


class SplitConfig(StrictModel):
    sft: int = Field(2000, ge=0)
    rl: int = Field(1000, ge=0)
    val: int = Field(500, ge=0)
    seed: int = Field(0, ge=0)
    from_splits: tuple[str, ...] = ("train", "validate")
    uncertain: Literal["zeros", "ones", "drop"] = "zeros"


class SplitReport(BaseModel):
    seed: int
    pool_images: int
    pool_patients: int
    sizes: dict[str, int]
    patients: dict[str, int]
    positives: dict[str, dict[str, int]]  # set -> label -> positive images
    excluded: dict[str, int] = {}  # reason -> studies of the official splits left out of the pool
    reserve: int = 0  # images in sft_reserve.jsonl
    test_images: int = 0  # labelled images of the official test split, in mimic_test.jsonl
    method: str = (
        "patient-grouped iterative stratification, rarest label first, every label seeded into every set"
    )


def split_mimic(mimic_root: Path, out: Path, config: SplitConfig) -> SplitReport:
    """Load a MIMIC-CXR-JPG copy, draw the sets and write `sft.jsonl`, `rl.jsonl`, `val.jsonl`,
    the reserve `sft_reserve.jsonl` and the official test split `mimic_test.jsonl` under `out`."""
    result = load_mimic(mimic_root, LoadOptions(uncertain=config.uncertain))
    pool, unlabelled = labelled([record for record in result.records if record.split in config.from_splits])
    wanted = config.sft + config.rl + config.val
    if wanted > len(pool):
        raise UserError(
            f"{mimic_root} has {len(pool)} usable images (one frontal per study, official splits "
            f"{', '.join(config.from_splits)}, {len(unlabelled)} studies without any label left out) but "
            f"{wanted} were asked for (sft {config.sft}, rl {config.rl}, val {config.val})"
        )
    sets = draw_split(
        pool, {"sft": config.sft, "rl": config.rl, "val": config.val}, config.seed, reserve_for="sft"
    )
    reserve = sets.pop("sft_reserve")
    test, _ = labelled([record for record in result.records if record.split == "test"])
    out = Path(out)
    for name, records in sets.items():
        write_manifest(records, out / f"{name}.jsonl")
    write_manifest(reserve, out / "sft_reserve.jsonl")
    write_manifest(test, out / "mimic_test.jsonl")
    return SplitReport(
        seed=config.seed,
        pool_images=len(pool),
        pool_patients=len({patient_of(record) for record in pool}),
        sizes={name: len(records) for name, records in sets.items()},
        patients={name: len({patient_of(record) for record in records}) for name, records in sets.items()},
        positives={name: label_counts(records) for name, records in sets.items()},
        excluded={NO_LABEL: len(unlabelled)},
        reserve=len(reserve),
        test_images=len(test),
    )


def write_split_report(out: Path, reports: dict[str, BaseModel]) -> Path:
    """`split_report.json`: one section per dataset split (mimic, nih, chexpert)."""
    text = json.dumps({name: report.model_dump() for name, report in reports.items()}, indent=2) + "\n"
    return write_atomically(Path(out) / "split_report.json", text)


def has_label(record: ManifestRecord) -> bool:
    """A positive label, No Finding included; an NIH image has its findings even when none of them
    falls among the nine categories scored (it then reads as negative for all nine)."""
    return bool(record.labels or record.metadata.get("nih_labels"))


def labelled(records: list[ManifestRecord]) -> tuple[list[ManifestRecord], list[ManifestRecord]]:
    """(records with a label, records without any)."""
    return [r for r in records if has_label(r)], [r for r in records if not has_label(r)]


def patient_of(record: ManifestRecord) -> str:
    return str(record.metadata.get("subject_id") or record.metadata.get("patient") or record.id)


def label_counts(records: list[ManifestRecord]) -> dict[str, int]:
    counts = Counter(label for record in records for label in record.labels)
    return {label: counts[label] for label in CHEXPERT_LABELS}


def draw_split(
    records: list[ManifestRecord], sizes: dict[str, int], seed: int, reserve_for: str | None = None
) -> dict[str, list[ManifestRecord]]:
    """Disjoint-by-patient sets of exactly `sizes` images; records come back with `split` set to
    the set's name and the official split kept in `metadata["official_split"]`. With `reserve_for`
    (a set's name) the result also holds `<name>_reserve`: the images no set took, of patients
    that are in no other set, in a seeded order (replacements for that set's rejected records)."""
    wanted = sum(sizes.values())
    if wanted > len(records):
        raise UserError(
            f"the pool has {len(records)} usable images but {wanted} were asked for "
            f"({', '.join(f'{name} {size}' for name, size in sizes.items())})"
        )
    rng = np.random.default_rng(seed)
    groups = group_by_patient(records, rng)
    room = {**sizes, UNUSED: len(records) - wanted}
    draw = StratifiedDraw(groups, room)
    draw.seed_every_label(list(sizes))
    draw.assign_rarest_first()
    draw.fill_short_sets(list(sizes))
    sets = {name: _as_split(draw.members[name], name) for name in sizes}
    if reserve_for is not None:
        spare = [
            record
            for index in sorted(draw.unused)
            if draw.owner[index] in (UNUSED, reserve_for)
            for record in draw.unused[index]
        ]
        sets[f"{reserve_for}_reserve"] = _as_split(spare, f"{reserve_for}_reserve")
    return sets


def _as_split(records: list[ManifestRecord], name: str) -> list[ManifestRecord]:
    return [
        record.model_copy(
            update={"split": name, "metadata": {**record.metadata, "official_split": record.split}}
        )
        for record in records
    ]


def group_by_patient(records: list[ManifestRecord], rng: np.random.Generator) -> list[list[ManifestRecord]]:
    by_patient: dict[str, list[ManifestRecord]] = {}
    for record in sorted(records, key=lambda record: record.id):
        by_patient.setdefault(patient_of(record), []).append(record)
    patients = sorted(by_patient)
    order = rng.permutation(len(patients))
    groups = []
    for index in order:
        group = by_patient[patients[index]]
        groups.append([group[i] for i in rng.permutation(len(group)).tolist()])
    return groups


class StratifiedDraw:
    """The state of one draw: where each patient went, room left, label counts still wanted."""

    def __init__(self, groups: list[list[ManifestRecord]], room: dict[str, int]):
        self.groups = groups
        self.room = dict(room)
        self.targets = dict(room)
        self.members: dict[str, list[ManifestRecord]] = {name: [] for name in room if name != UNUSED}
        self.unused: dict[int, list[ManifestRecord]] = {}  # patient -> images in no set
        self.owner: dict[int, str] = {}  # patient -> the set holding it (or UNUSED)
        total = sum(len(group) for group in groups)
        label_totals = Counter(label for group in groups for record in group for label in record.labels)
        self.wanted = {
            name: {label: label_totals[label] * size / max(total, 1) for label in CHEXPERT_LABELS}
            for name, size in room.items()
        }
        self.group_labels = [
            Counter(label for record in group for label in record.labels) for group in groups
        ]
        self.unplaced_positives = Counter(label_totals)  # label -> images of patients not yet placed

    def place(self, index: int, name: str) -> None:
        """Put patient `index` into set `name`; images that do not fit stay unused."""
        group = self.groups[index]
        fits = [] if name == UNUSED else group[: max(0, self.room[name])]
        if fits:
            self.members[name].extend(fits)
            self.room[name] -= len(fits)
            for record in fits:
                for label in record.labels:
                    self.wanted[name][label] -= 1
        self.unplaced_positives.subtract(self.group_labels[index])
        rest = group[len(fits) :]
        if rest:
            self.unused[index] = rest
            self.room[UNUSED] -= len(rest)
            if name == UNUSED:
                for label, count in self.group_labels[index].items():
                    self.wanted[UNUSED][label] -= count
        self.owner[index] = name

    def best_set(self, index: int, label: str | None) -> str:
        """The set that most wants this patient: its deficit in `label` relative to the set's size,
        plus half its relative deficit over all the patient's labels (so common labels stay
        balanced too), ties going to the set with most room left relative to its size."""
        size = len(self.groups[index])
        whole = [name for name in self.room if self.room[name] >= size]
        options = whole or [name for name in self.room if self.room[name] > 0] or [UNUSED]
        labels = self.group_labels[index]

        def want(name: str) -> tuple[float, float]:
            scale = 1.0 / max(self.targets[name], 1)
            main = self.wanted[name][label] * scale if label else 0.0
            others = sum(count * self.wanted[name][other] for other, count in labels.items()) * scale
            return main + 0.5 * others, self.room[name] * scale

        return max(options, key=want)

    def unplaced(self, label: str | None = None) -> list[int]:
        return [
            index
            for index in range(len(self.groups))
            if index not in self.owner and (label is None or self.group_labels[index][label])
        ]

    def rarest_labels(self) -> list[str]:
        """Labels still held by unplaced patients, fewest images first."""
        present = [label for label in CHEXPERT_LABELS if self.unplaced_positives[label] > 0]
        return sorted(
            present, key=lambda label: (self.unplaced_positives[label], CHEXPERT_LABELS.index(label))
        )

    def seed_every_label(self, set_names: list[str]) -> None:
        for label in self.rarest_labels():
            # Smallest patients first, so that seeding costs the sets little room.
            choices = sorted(self.unplaced(label), key=lambda index: len(self.groups[index]))
            for name in set_names:
                if self.room[name] <= 0 or any(label in record.labels for record in self.members[name]):
                    continue
                choices = [index for index in choices if index not in self.owner]
                if not choices:
                    break
                self.place(choices[0], name)

    def assign_rarest_first(self) -> None:
        while len(self.owner) < len(self.groups):
            labels = self.rarest_labels()
            label = labels[0] if labels else None  # None: the patients left have no positive label
            for index in self.unplaced(label):
                self.place(index, self.best_set(index, label))

    def fill_short_sets(self, set_names: list[str]) -> None:
        """Cut patients can leave a set short while others' images sit unused: top it up from
        patients that are unused or already in that set, never from another set's patients."""
        for name in set_names:
            for index in sorted(self.unused):
                if self.room[name] <= 0:
                    break
                if self.owner[index] not in (UNUSED, name):
                    continue
                rest = self.unused.pop(index)
                take = rest[: self.room[name]]
                self.members[name].extend(take)
                self.room[name] -= len(take)
                self.owner[index] = name
                if rest[len(take) :]:
                    self.unused[index] = rest[len(take) :]
            if self.room[name] > 0:
                raise UserError(
                    f"cannot fill the {name} set without sharing patients between sets; ask for fewer images"
                )
