"""Does a tiny model see? A linear probe on its image features, against phantoms' findings.

The image features are what the language model receives in place of the image tokens (the
vision tower, pooling and projector: `get_image_features`), flattened per image. One logistic
regression per label is fitted on a patient-disjoint training part of the MIMIC-style phantoms
and scored with the project's own metrics on the held-out part and on the held-out patients'
NIH-style (shifted) films, beside the baseline that predicts every label seen in training. A blind model (all
images mapped to the same features) scores no better than that baseline; a model that sees beats
it, since the phantoms draw each finding into the film.
"""

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from transformers import AutoModelForImageTextToText, AutoProcessor

from dataprep.loading import LoadOptions
from dataprep.mimic import load_mimic
from dataprep.split import draw_split
from evaluation.baselines import score_prevalence_baseline, training_prevalence
from evaluation.metrics import score_label_lists
from shared.images import decode_xray
from shared.labels import CHEXPERT_LABELS
from shared.manifest import ManifestRecord, read_manifest

PROBE_C = 1.0  # inverse L2 strength of each label's logistic regression (standardised features)
HELD_OUT_SHARE = 0.3


class ProbeReport(BaseModel):
    model: str
    feature_dim: int
    distinct_features: int  # distinct image-feature vectors among all images probed
    between_image_share: float  # of the features' mean square, the part that varies between images
    n_train: int
    n_held_out: int
    n_ood: int
    probe_macro_f1: float  # held-out MIMIC-style phantoms, chexpert14
    probe_micro_f1: float
    baseline_macro_f1: float  # every label seen in training, same images
    ood_probe_macro_f1: float  # the held-out patients' NIH-style films, nih9
    ood_baseline_macro_f1: float


@torch.no_grad()
def image_features(model_dir: str | Path, images: Sequence[bytes], batch_size: int = 16) -> np.ndarray:
    """[N, tokens x hidden] float32: each X-ray's image tokens as the language model receives them."""
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    rows: list[np.ndarray] = []
    for start in range(0, len(images), batch_size):
        pixels = processor.image_processor(
            [decode_xray(data) for data in images[start : start + batch_size]], return_tensors="pt"
        )
        extra = {"image_grid_thw": pixels["image_grid_thw"]} if "image_grid_thw" in pixels else {}
        features = model.model.get_image_features(pixels["pixel_values"], **extra).pooler_output
        rows.extend(tokens.flatten().numpy() for tokens in features)  # per image, in both layouts
    if len({row.shape for row in rows}) != 1:
        raise ValueError("images of different token counts: probe images of one size")
    return np.stack(rows)


def between_image_share(features: np.ndarray) -> float:
    """Variance across images (summed over feature dimensions) over the mean squared feature norm:
    near 0 when every image reaches the language model as about the same tokens, 1 when nothing is
    common to all images."""
    features = features.astype(np.float64)
    return float(features.var(axis=0).sum() / (features**2).sum(axis=1).mean())


def fit_and_predict(
    train_x: np.ndarray, train_labels: list[list[str]], test_x: list[np.ndarray], seed: int
) -> list[list[list[str]]]:
    """One L2 logistic regression per label on standardised features; a label always (or never)
    present in training is predicted always (or never)."""
    scaler = StandardScaler().fit(train_x)
    train_z = scaler.transform(train_x)
    tests_z = [scaler.transform(x) for x in test_x]
    predictions: list[list[list[str]]] = [[[] for _ in x] for x in test_x]
    for label in CHEXPERT_LABELS:
        y = np.array([label in labels for labels in train_labels])
        if y.all() or not y.any():
            on = [np.full(len(x), y.any()) for x in test_x]
        else:
            classifier = LogisticRegression(C=PROBE_C, max_iter=5000, random_state=seed).fit(train_z, y)
            on = [classifier.predict(z) for z in tests_z]
        for target, flags in zip(predictions, on, strict=True):
            for row, flag in zip(target, flags, strict=True):
                if flag:
                    row.append(label)
    return predictions


def phantom_probe(model_dir: str | Path, phantom_root: str | Path, seed: int = 0) -> ProbeReport:
    """Probe `model_dir` on a folder written by `dataprep.phantoms.datasets.make_phantoms`."""
    root = Path(phantom_root)
    pool = load_mimic(root / "mimic", LoadOptions(progress=False)).records
    held_out = int(len(pool) * HELD_OUT_SHARE)
    sets = draw_split(pool, {"train": len(pool) - held_out, "held_out": held_out}, seed=seed)
    # The NIH-style copies are films of the same phantom patients: only held-out patients' count.
    held_out_subjects = {record.metadata["subject_id"] for record in sets["held_out"]}
    cases = [json.loads(line) for line in (root / "phantom_truth.jsonl").read_text().splitlines()]
    held_out_films = {
        case["nih_image"] for case in cases if str(case["mimic_subject_id"]) in held_out_subjects
    }
    ood: list[ManifestRecord] = [
        record.model_copy(update={"image": str(record.image_path(root / "manifests"))})
        for path in sorted((root / "manifests").glob("nih_*.jsonl"))
        for record in read_manifest(path)
        if record.id in held_out_films
    ]
    groups = [sets["train"], sets["held_out"], ood]
    features = image_features(model_dir, [Path(r.image).read_bytes() for group in groups for r in group])
    parts = np.split(features, np.cumsum([len(group) for group in groups])[:-1])
    train_labels = [record.labels for record in sets["train"]]
    held_out_pred, ood_pred = fit_and_predict(parts[0], train_labels, parts[1:], seed)

    def scores(records: list[ManifestRecord], preds: list[list[str]], label_set: str):
        truths = [record.labels for record in records]
        probe = score_label_lists(truths, preds, [True] * len(preds), label_set)
        baseline = score_prevalence_baseline(
            truths, training_prevalence(train_labels), label_set, "threshold"
        )
        return probe, baseline.scores

    probe, baseline = scores(sets["held_out"], held_out_pred, "chexpert14")
    ood_probe, ood_baseline = scores(ood, ood_pred, "nih9")
    return ProbeReport(
        model=str(model_dir),
        feature_dim=features.shape[1],
        distinct_features=len(np.unique(features.round(6), axis=0)),
        between_image_share=between_image_share(features),
        n_train=len(sets["train"]),
        n_held_out=len(sets["held_out"]),
        n_ood=len(ood),
        probe_macro_f1=probe.macro_f1,
        probe_micro_f1=probe.micro_f1,
        baseline_macro_f1=baseline.macro_f1,
        ood_probe_macro_f1=ood_probe.macro_f1,
        ood_baseline_macro_f1=ood_baseline.macro_f1,
    )
