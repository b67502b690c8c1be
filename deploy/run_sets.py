"""Selection sets apart from report sets, checked before any training.

A run scores its selection sets (ID and OOD validation) every K GRPO steps to choose a checkpoint,
and its report sets (the test sets) once, at the end. Choosing on test images tunes on the test
set, and re-scoring the chosen step on the images it was chosen on reports the luck of the choice
as skill. So the driver refuses, naming the file:
- a selection set holding a row of a dataset's official test split (NIH `test_list.txt`,
  MIMIC-CXR's `test`, CheXpert's `test*.csv`), as the loaders record it in each row's split
  (`metadata.official_split` once `cxr-rl data split` drew the row);
- a selection set and a report set sharing an image;
- a training set (SFT, RL) and a report set sharing an image.
Two rows are the same image when their files resolve to the same path, or when they have the same
source and id (the same image in two copies).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shared.errors import UserError
from shared.manifest import ManifestRecord, read_manifest

SetKind = Literal["training", "selection", "report"]
OFFICIAL_TEST = {
    "nih": "NIH's official test split (test_list.txt)",
    "mimic": "MIMIC-CXR's official test split",
    "chexpert": "CheXpert's test split",
}


@dataclass(frozen=True)
class RunSet:
    key: str  # where the config names it, e.g. "data.ood_val_manifest" or "data.report_sets[nih]"
    manifest: Path
    kind: SetKind


def official_split(record: ManifestRecord) -> str:
    return str(record.metadata.get("official_split") or record.split).lower()


def _image_keys(record: ManifestRecord, folder: Path) -> set[str]:
    return {f"path:{record.image_path(folder).resolve()}", f"id:{record.source}:{record.id}"}


def _describe(run_set: RunSet) -> str:
    return f"{run_set.key} ({run_set.manifest})"


def check_selection_is_not_test(run_set: RunSet, records: list[ManifestRecord]) -> None:
    test = [record for record in records if official_split(record) == "test"]
    if not test:
        return
    source = test[0].source.lower()
    name = next(
        (text for key, text in OFFICIAL_TEST.items() if key in source), "its dataset's official test split"
    )
    raise UserError(
        f"{_describe(run_set)} holds {len(test)} row(s) of {name}, e.g. {test[0].id!r}: choosing a checkpoint "
        "on test images tunes on the test set. Select on a validation split (`cxr-rl data split --nih-root "
        "or --chexpert-root` writes <name>_val.jsonl) and score the test split in data.report_sets"
    )


def check_run_sets(run_sets: list[RunSet]) -> None:
    """Raise a UserError naming the files when the sets break the rules above."""
    keys: dict[str, dict[str, str]] = {}  # set key -> image key -> record id
    for run_set in run_sets:
        records = read_manifest(run_set.manifest)
        if run_set.kind == "selection":
            check_selection_is_not_test(run_set, records)
        folder = run_set.manifest.parent
        keys[run_set.key] = {key: record.id for record in records for key in _image_keys(record, folder)}
    for report in (s for s in run_sets if s.kind == "report"):
        for other in (s for s in run_sets if s.kind != "report"):
            shared = keys[report.key].keys() & keys[other.key].keys()
            if shared:
                ids = sorted({keys[report.key][key] for key in shared})
                what = "a selection set" if other.kind == "selection" else "a training set"
                raise UserError(
                    f"{_describe(other)} and {_describe(report)} share {len(ids)} image(s), e.g. {ids[0]!r}: "
                    f"{what} must hold none of a report set's images"
                )
