"""Phantom chest X-ray datasets: the same synthetic patients written as MIMIC-CXR-JPG, CheXpert
and NIH ChestX-ray14 copies (each with its own institution style), plus JSONL manifests and the
ground truth, so every later stage can be run and checked without real data."""

import os
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from pydantic import BaseModel
from tqdm import tqdm

from dataprep.phantoms.images import INSTITUTION_STYLES, FilmStyler, quantize, render_frontal, render_lateral
from dataprep.phantoms.manifests import write_phantom_manifests
from dataprep.phantoms.plan import (
    CooccurrenceTable,
    PhantomCase,
    case_rng,
    nih_labels_for,
    plan_case,
    subject_layout,
)
from shared.atomic_files import write_atomically, write_csv_atomically
from shared.errors import UserError
from shared.labels import CHEXPERT_LABELS

MIMIC_LABEL_COLUMNS = sorted(CHEXPERT_LABELS)  # MIMIC-CXR-JPG's chexpert.csv lists labels alphabetically
MIMIC_METADATA_COLUMNS = (
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
    "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)  # fmt: skip
NIH_COLUMNS = (
    "Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender", "View Position",
    "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]",
)  # fmt: skip
NIH_IMAGES_PER_FOLDER = 1000  # the real release packs 10,000 per images_XXX folder; fewer here so
# even modest phantom sets exercise the loader's search over several folders
PROGRESS_MIN_CASES = 200


class PhantomSummary(BaseModel):
    out: str
    n: int
    seed: int
    size: int
    images: dict[str, int]  # format -> image files written
    manifests: dict[str, int]  # manifest file -> records
    positives: dict[str, int]  # CheXpert label -> studies showing it
    seconds: float


def label_value(label: str, case: PhantomCase, allow_uncertain: bool) -> str:
    if label in case.positives:
        return "1.0"
    if label in case.uncertain:
        return "-1.0" if allow_uncertain else "0.0"
    if label in case.explicit_negatives or not allow_uncertain:
        return "0.0"  # CheXpert's valid.csv has no blanks and no -1
    return ""


def default_workers() -> int:
    return max(
        1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    )


def prepare_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-check-"):
            pass
    except OSError as error:
        raise UserError(f"cannot write to --out {out}: {error.strerror or error}") from None


def make_phantoms(
    out: Path, n: int, seed: int = 0, size: int = 256, workers: int | None = None
) -> PhantomSummary:
    """Write `n` phantom studies under `out` in all three dataset formats and return a summary.
    `workers` threads draw the films (default: one per CPU core, at most 4)."""
    if n < 1:
        raise UserError(f"--n must be at least 1 (got {n})")
    if seed < 0:
        raise UserError(f"--seed must be a non-negative integer (got {seed})")
    if not 64 <= size <= 2048:
        raise UserError(f"--size must be between 64 and 2048 pixels (got {size})")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1 (got {workers})")
    out = Path(out)
    prepare_output(out)
    started = time.perf_counter()
    table = CooccurrenceTable.load()
    layout = subject_layout(seed, n)
    cases = [plan_case(seed, index, *layout[index], table) for index in range(n)]
    images: Counter[str] = Counter()
    stylers = {name: FilmStyler(style, size) for name, style in INSTITUTION_STYLES.items()}
    # Threads, not processes: drawing is numpy and image encoding and file writes release the GIL,
    # and a forked or spawned pool would be fragile inside trainers and test runners.
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        drawn = pool.map(lambda case: write_case_images(out, case, seed, size, stylers), cases)
        for written in tqdm(
            drawn, total=n, desc="phantoms", unit="study", disable=n < PROGRESS_MIN_CASES, delay=1.0
        ):
            images.update(written)
    write_mimic_tables(out / "mimic", cases, size)
    write_chexpert_tables(out / "chexpert", cases)
    write_nih_tables(out / "nih", cases, size)
    write_atomically(out / "phantom_truth.jsonl", "".join(case.model_dump_json() + "\n" for case in cases))
    manifests = write_phantom_manifests(out)
    positives = Counter(label for case in cases for label in case.positives)
    summary = PhantomSummary(
        out=str(out),
        n=n,
        seed=seed,
        size=size,
        images=dict(images),
        manifests=manifests,
        positives={label: positives[label] for label in CHEXPERT_LABELS},
        seconds=round(time.perf_counter() - started, 2),
    )
    write_atomically(out / "phantoms.json", summary.model_dump_json(indent=2) + "\n")
    return summary


def write_case_images(
    out: Path, case: PhantomCase, seed: int, size: int, stylers: dict[str, FilmStyler]
) -> Counter[str]:
    """Draw one study and write its films in every format; fills in the case's drawn findings."""
    film = render_frontal(case.positives, case_rng(seed, case.case, "frontal"), size)
    case.drawn = film.drawn
    case.nih_labels = nih_labels_for(case.positives, film.drawn)
    frontal = quantize(film.density)
    lateral = None
    if case.mimic_lateral or case.chexpert_lateral:
        lateral = quantize(render_lateral(case_rng(seed, case.case, "lateral"), size))
    # One noise field per study, scaled by each style: the formats are copies of the same film.
    noise = case_rng(seed, case.case, "noise").standard_normal((size, size), dtype=np.float32)
    written: Counter[str] = Counter()

    study_dir = out / "mimic" / mimic_study_folder(case)
    for view, dicom in case.mimic_dicom_ids.items():
        levels = lateral if view == "lateral" else frontal
        # The extra AP film of a study is a second exposure: its own noise.
        film_noise = noise[::-1] if view == "extra_ap" else noise
        write_atomically(study_dir / f"{dicom}.jpg", stylers["mimic"].encode(levels, film_noise))
        written["mimic"] += 1

    frontal_path = out / "chexpert" / case.chexpert_path
    write_atomically(frontal_path, stylers["chexpert"].encode(frontal, noise))
    written["chexpert"] += 1
    if case.chexpert_lateral:
        write_atomically(
            frontal_path.with_name("view2_lateral.jpg"), stylers["chexpert"].encode(lateral, noise)
        )
        written["chexpert"] += 1

    write_atomically(
        out / "nih" / nih_image_folder(case) / case.nih_image, stylers["nih"].encode(frontal, noise)
    )
    written["nih"] += 1
    return written


def mimic_study_folder(case: PhantomCase) -> str:
    subject = str(case.mimic_subject_id)
    return f"files/p{subject[:2]}/p{subject}/s{case.mimic_study_id}"


def nih_image_folder(case: PhantomCase) -> str:
    return f"images_{case.case // NIH_IMAGES_PER_FOLDER + 1:03d}/images"


def mimic_view_position(case: PhantomCase, view: str) -> str:
    return {"frontal": case.frontal_view, "extra_ap": "AP", "lateral": "LATERAL"}[view]


def write_mimic_tables(root: Path, cases: list[PhantomCase], size: int) -> None:
    labels = [
        [
            case.mimic_subject_id,
            case.mimic_study_id,
            *(label_value(label, case, True) for label in MIMIC_LABEL_COLUMNS),
        ]
        for case in cases
    ]
    write_csv_atomically(
        root / "mimic-cxr-2.0.0-chexpert.csv", ["subject_id", "study_id", *MIMIC_LABEL_COLUMNS], labels
    )
    metadata, split = [], []
    for case in cases:
        for view, dicom in case.mimic_dicom_ids.items():
            position = mimic_view_position(case, view)
            orientation = (
                "lateral"
                if view == "lateral"
                else "postero-anterior"
                if position == "PA"
                else "antero-posterior"
            )
            date = 21000101 + case.study_in_subject
            metadata.append(
                [dicom, case.mimic_subject_id, case.mimic_study_id, "CHEST (PA AND LAT)", position, size, size, date,
                 120000.0, "CHEST (PA AND LAT)", orientation, "Erect"]
            )  # fmt: skip
            split.append([dicom, case.mimic_study_id, case.mimic_subject_id, case.mimic_split])
    write_csv_atomically(root / "mimic-cxr-2.0.0-metadata.csv", MIMIC_METADATA_COLUMNS, metadata)
    write_csv_atomically(
        root / "mimic-cxr-2.0.0-split.csv", ["dicom_id", "study_id", "subject_id", "split"], split
    )


def write_chexpert_tables(root: Path, cases: list[PhantomCase]) -> None:
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]
    for split in ("train", "valid"):
        rows = []
        for case in (case for case in cases if case.chexpert_split == split):
            values = [label_value(label, case, split == "train") for label in CHEXPERT_LABELS]
            rows.append([case.chexpert_path, case.sex, case.age, "Frontal", case.frontal_view, *values])
            if case.chexpert_lateral:
                lateral = case.chexpert_path.replace("view1_frontal", "view2_lateral")
                rows.append([lateral, case.sex, case.age, "Lateral", "", *values])
        write_csv_atomically(root / f"{split}.csv", header, rows)


def write_nih_tables(root: Path, cases: list[PhantomCase], size: int) -> None:
    rows = [
        [case.nih_image, "|".join(case.nih_labels), case.study_in_subject, case.subject_index + 1, case.age,
         case.sex[0], case.frontal_view, size, size, 0.143, 0.143]
        for case in cases
    ]  # fmt: skip
    write_csv_atomically(root / "Data_Entry_2017.csv", NIH_COLUMNS, rows)
    for split, name in (("train_val", "train_val_list.txt"), ("test", "test_list.txt")):
        names = [case.nih_image for case in cases if case.nih_split == split]
        write_atomically(root / name, "".join(f"{image}\n" for image in names))
