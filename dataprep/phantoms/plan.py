"""What each phantom case is: its patient, its findings (sampled from real CheXpert label
co-occurrence), the -1 and 0.0 values its CSV rows carry, and its identifiers in each format.

Everything is drawn from generators seeded by (seed, case), so case k is the same whatever `n`.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from shared.labels import CHEXPERT_LABELS, NIH_LABELS, NIH_NO_FINDING, NO_FINDING

COOCCURRENCE_TABLE = Path(__file__).parent.parent / "cooccurrence.json"  # dataprep/, beside its deriving script

# CheXpert finding -> NIH ChestX-ray14 finding, for the NIH copy of each phantom. Lung Lesion is a
# Nodule or a Mass by drawn size; Enlarged Cardiomediastinum, Fracture and Support Devices have no
# NIH label, so an image with only those is "No Finding" in NIH, as in the real NIH labels.
CHEXPERT_TO_NIH = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Lung Opacity": "Infiltration",
    "Pleural Effusion": "Effusion",
    "Pleural Other": "Pleural_Thickening",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
}


class PhantomCase(BaseModel):
    """Ground truth of one phantom study, one line of `phantom_truth.jsonl`."""

    case: int
    subject_index: int
    study_in_subject: int
    positives: list[str]  # CheXpert findings drawn on the frontal film
    uncertain: list[str]  # written as -1.0 (train CSVs); not drawn
    explicit_negatives: list[str]  # written as 0.0 rather than blank
    nih_labels: list[str]  # NIH names of the drawn findings ("No Finding" when none map)
    frontal_view: str  # PA | AP
    extra_ap: bool  # MIMIC study also holds a second, AP frontal (the loader must prefer PA)
    mimic_lateral: bool
    chexpert_lateral: bool
    mimic_subject_id: int
    mimic_study_id: int
    mimic_dicom_ids: dict[str, str]  # "frontal" | "extra_ap" | "lateral" -> dicom_id
    mimic_split: str
    chexpert_path: str
    chexpert_split: str
    nih_image: str
    nih_split: str
    sex: str
    age: int
    drawn: dict[str, dict] = {}


@dataclass(frozen=True)
class CooccurrenceTable:
    combinations: list[list[str]]
    probabilities: np.ndarray
    uncertain_rate: dict[str, float]
    explicit_negative_rate: dict[str, float]

    @classmethod
    def load(cls, path: Path = COOCCURRENCE_TABLE) -> "CooccurrenceTable":
        table = json.loads(path.read_text())
        counts = np.array([entry["count"] for entry in table["combinations"]], dtype=np.float64)
        return cls(
            combinations=[entry["labels"] for entry in table["combinations"]],
            probabilities=counts / counts.sum(),
            uncertain_rate=table["uncertain_rate"],
            explicit_negative_rate=table["explicit_negative_rate"],
        )

    def sample(self, rng: np.random.Generator) -> tuple[list[str], list[str], list[str]]:
        """(positives, uncertain, explicit negatives) for one study."""
        positives = self.combinations[int(rng.choice(len(self.combinations), p=self.probabilities))]
        uncertain, negatives = [], []
        for label in CHEXPERT_LABELS:
            draw = rng.random()
            if label in positives or label == NO_FINDING:
                continue
            if draw < self.uncertain_rate[label]:
                uncertain.append(label)
            elif draw < self.uncertain_rate[label] + self.explicit_negative_rate[label]:
                negatives.append(label)
        return list(positives), uncertain, negatives


def case_rng(seed: int, case: int, purpose: str) -> np.random.Generator:
    purpose_key = int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:4], "little")
    return np.random.default_rng([seed, case, purpose_key])


def dicom_id(seed: int, case: int, view: str) -> str:
    """A MIMIC-style DICOM id: five dash-joined groups of eight hex digits."""
    digest = hashlib.sha256(f"{seed}/{case}/{view}".encode()).hexdigest()
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


def nih_labels_for(positives: list[str], drawn: dict[str, dict]) -> list[str]:
    names = {CHEXPERT_TO_NIH[label] for label in positives if label in CHEXPERT_TO_NIH}
    if "Lung Lesion" in positives:
        names.add(str(drawn.get("Lung Lesion", {}).get("nih", "Nodule")))
    return [label for label in NIH_LABELS if label in names] or [NIH_NO_FINDING]


def subject_layout(seed: int, n: int) -> list[tuple[int, int]]:
    """(subject index, study number within the subject) per case: 1 to 4 studies per patient."""
    rng = case_rng(seed, 0, "subjects")
    layout: list[tuple[int, int]] = []
    subject = 0
    while len(layout) < n:
        studies = int(rng.choice([1, 1, 1, 2, 2, 3, 4]))
        layout.extend((subject, study) for study in range(studies))
        subject += 1
    return layout[:n]


def official_splits(subject: int) -> tuple[str, str, str]:
    """(MIMIC, CheXpert, NIH) split of a patient. A fixed pattern over patient numbers rather than a
    random draw, so even 48 phantoms have patients in every split; splits are always by patient."""
    mimic = {7: "validate", 9: "test"}.get(subject % 10, "train")
    chexpert = "valid" if subject % 8 == 3 else "train"
    nih = "test" if subject % 5 == 2 else "train_val"
    return mimic, chexpert, nih


def plan_case(seed: int, case: int, subject: int, study: int, table: CooccurrenceTable) -> PhantomCase:
    rng = case_rng(seed, case, "plan")
    patient = case_rng(seed, subject, "patient")
    positives, uncertain, negatives = table.sample(rng)
    frontal_view = "PA" if rng.random() < 0.6 else "AP"
    extra_ap = frontal_view == "PA" and rng.random() < 0.15
    mimic_split, chexpert_split, nih_split = official_splits(subject)
    mimic_lateral = bool(rng.random() < 0.4)
    chexpert_lateral = bool(rng.random() < 0.25)
    views = ["frontal"] + (["extra_ap"] if extra_ap else []) + (["lateral"] if mimic_lateral else [])
    chexpert_folder = "valid" if chexpert_split == "valid" else "train"
    return PhantomCase(
        case=case,
        subject_index=subject,
        study_in_subject=study,
        positives=positives,
        uncertain=uncertain,
        explicit_negatives=negatives,
        nih_labels=[],  # known once the film is drawn (a lesion's size makes it a Nodule or a Mass)
        frontal_view=frontal_view,
        extra_ap=extra_ap,
        mimic_lateral=mimic_lateral,
        chexpert_lateral=chexpert_lateral,
        mimic_subject_id=10_000_000 + 7 * subject + 3,
        mimic_study_id=50_000_000 + 11 * case + 5,
        mimic_dicom_ids={view: dicom_id(seed, case, view) for view in views},
        mimic_split=mimic_split,
        chexpert_path=f"CheXpert-v1.0-small/{chexpert_folder}/patient{subject + 1:05d}/study{study + 1}/view1_frontal.jpg",
        chexpert_split=chexpert_split,
        nih_image=f"{subject + 1:08d}_{study:03d}.png",
        nih_split=nih_split,
        sex=str(patient.choice(["Female", "Male"])),
        age=int(patient.integers(18, 86)) + study,
    )
