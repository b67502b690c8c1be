"""An out-of-distribution validation split carved out of an NIH ChestX-ray14 or CheXpert copy,
beside the copy's official test split, so that checkpoint selection never sees a test image.

- The report set is the official test split: NIH's `test_list.txt`, CheXpert's `test*.csv` (or,
  for a copy without one, `valid.csv`, said so in the report). It is written whole.
- The validation split is drawn from the rest, after removing every image of a patient who has
  an image in the test split: selection and report sets share no patient. The draw is the same
  patient-grouped, label-stratified draw as the MIMIC split, seeded, of exactly the size asked.
- Images with no label at all stay out of both and are counted.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from dataprep.chexpert import load_chexpert
from dataprep.loading import LoadOptions, LoadResult
from dataprep.nih import load_nih
from dataprep.split import NO_LABEL, draw_split, label_counts, labelled, patient_of
from shared.errors import UserError
from shared.manifest import ManifestRecord, write_manifest

ExternalSource = Literal["nih", "chexpert"]
TEST_PATIENT = "patient in the test split"


class ExternalSplitReport(BaseModel):
    source: str
    test_split: str  # which official split became the report set, in words
    sizes: dict[str, int]  # "val" and "test" -> images
    patients: dict[str, int]
    positives: dict[str, dict[str, int]]
    excluded: dict[str, int]  # reason -> images left out of the validation pool
    notes: list[str] = []


def official_split(record: ManifestRecord) -> str:
    """The dataset's own split of a record (kept in `metadata.official_split` once drawn)."""
    return str(record.metadata.get("official_split") or record.split)


def _loader(source: ExternalSource) -> Callable[[Path, LoadOptions], LoadResult]:
    return {"nih": load_nih, "chexpert": load_chexpert}[source]


def split_external(
    source: ExternalSource, root: Path, out: Path, val_size: int, seed: int, uncertain: str = "zeros"
) -> ExternalSplitReport:
    """Write `<source>_val.jsonl` (selection) and `<source>_test.jsonl` (report) under `out`."""
    records = _loader(source)(root, LoadOptions(uncertain=uncertain)).records
    records, unlabelled = labelled(records)
    notes = []
    test = [record for record in records if official_split(record) == "test"]
    test_split = "test_list.txt" if source == "nih" else "test*.csv"
    if not test and source == "chexpert":
        test = [record for record in records if official_split(record) == "valid"]
        test_split = "valid.csv (the copy has no test CSV)"
        notes.append("no CheXpert test CSV in the copy: its valid.csv is the report set")
    if not test:
        wanted = "test_list.txt" if source == "nih" else "test.csv or valid.csv"
        raise UserError(f"{root}: no official test split found (looked for {wanted}); nothing to report on")
    test_ids = {record.id for record in test}
    test_patients = {patient_of(record) for record in test}
    rest = [record for record in records if record.id not in test_ids]
    pool = [record for record in rest if patient_of(record) not in test_patients]
    if val_size > len(pool):
        raise UserError(
            f"{root}: {len(pool)} images outside the test split and its patients, but a validation split "
            f"of {val_size} was asked for"
        )
    val = draw_split(pool, {"val": val_size}, seed)["val"]
    write_manifest(val, Path(out) / f"{source}_val.jsonl")
    write_manifest(test, Path(out) / f"{source}_test.jsonl")
    sets = {"val": val, "test": test}
    return ExternalSplitReport(
        source=source,
        test_split=test_split,
        sizes={name: len(rows) for name, rows in sets.items()},
        patients={name: len({patient_of(record) for record in rows}) for name, rows in sets.items()},
        positives={name: label_counts(rows) for name, rows in sets.items()},
        excluded={NO_LABEL: len(unlabelled), TEST_PATIENT: len(rest) - len(pool)},
        notes=notes,
    )
