"""Shortcut baselines, scored with the same metrics as the model, so a table can show how much of a
checkpoint's F1 a model could get without reading the image.

- Prevalence, thresholded: every image gets every label whose training prevalence exceeds a
  threshold. Threshold 0 predicts every label ever seen in training (for a constant predictor this
  maximises each label's F1: 2p / (1 + p)); 0.5 is the per-label majority vote, which on chest X-ray
  data usually predicts nothing.
- Prevalence, sampled: each image gets each label independently with its training prevalence, from
  a seeded generator: a model that has learnt the label frequencies and nothing else.
- Blank images: the model's own answers on blank images (collected by a runner with the rollout
  server), scored against the truths of the real images they stand in for.
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel

from evaluation.metrics import LabelSetScores, score_predictions
from evaluation.records import ScoredPrediction
from shared.errors import UserError
from shared.labels import CHEXPERT_LABELS, check_chexpert_labels


class PrevalenceBaseline(BaseModel):
    mode: Literal["threshold", "sample"]
    threshold: float | None  # threshold mode
    seed: int | None  # sample mode
    prevalence: dict[str, float]
    predicted_labels: list[str] | None  # threshold mode: the labels given to every image
    scores: LabelSetScores


class BlankImageAnswer(BaseModel):
    """What a checkpoint answered on the blank image."""

    text: str
    pred: list[str]
    valid: bool
    parse_status: str
    width: int
    height: int


class BlankImageBaseline(BaseModel):
    scores: LabelSetScores
    label_rate: dict[str, float]  # share of valid blank-image answers naming each label
    answer: BlankImageAnswer | None = None  # set when one answer stands in for every image


class DatasetBaselines(BaseModel):
    """Every shortcut baseline of one dataset: the prevalence ones (model-free) and, per checkpoint,
    its blank-image answer scored against every image's truth."""

    prevalence_source: str  # where the prevalence came from, in words
    prevalence: list[PrevalenceBaseline]
    blank_images: dict[str, BlankImageBaseline] = {}  # checkpoint -> baseline


def training_prevalence(training_labels: Iterable[Iterable[str]]) -> dict[str, float]:
    """Share of training images carrying each CheXpert label."""
    counts = dict.fromkeys(CHEXPERT_LABELS, 0)
    n_images = 0
    for labels in training_labels:
        n_images += 1
        for label in check_chexpert_labels(list(labels)):
            counts[label] += 1
    if n_images == 0:
        raise UserError("training prevalence needs at least one training image")
    return {label: count / n_images for label, count in counts.items()}


def prevalence_threshold_predictions(
    prevalence: Mapping[str, float], n_images: int, threshold: float
) -> list[list[str]]:
    labels = check_chexpert_labels([label for label, share in prevalence.items() if share > threshold])
    return [list(labels) for _ in range(n_images)]


def prevalence_sampled_predictions(
    prevalence: Mapping[str, float], n_images: int, seed: int
) -> list[list[str]]:
    labels = check_chexpert_labels(list(prevalence))
    shares = np.array([prevalence[label] for label in labels])
    drawn = np.random.default_rng(seed).random((n_images, len(labels))) < shares
    return [[label for label, on in zip(labels, row, strict=True) if on] for row in drawn]


def score_prevalence_baseline(
    truths: Sequence[Iterable[str]],
    prevalence: Mapping[str, float],
    label_set_name: str,
    mode: Literal["threshold", "sample"],
    threshold: float = 0.0,
    seed: int = 0,
) -> PrevalenceBaseline:
    """Score a prevalence baseline on the evaluation images' truths (CheXpert names)."""
    if mode == "threshold":
        preds = prevalence_threshold_predictions(prevalence, len(truths), threshold)
    elif mode == "sample":
        preds = prevalence_sampled_predictions(prevalence, len(truths), seed)
    else:
        raise UserError(f"prevalence baseline mode must be 'threshold' or 'sample', not {mode!r}")
    predictions = [
        ScoredPrediction(truth=list(truth), pred=pred, valid=True)
        for truth, pred in zip(truths, preds, strict=True)
    ]
    return PrevalenceBaseline(
        mode=mode,
        threshold=threshold if mode == "threshold" else None,
        seed=seed if mode == "sample" else None,
        prevalence=dict(prevalence),
        predicted_labels=preds[0] if mode == "threshold" and preds else None,
        scores=score_predictions(predictions, label_set_name),
    )


def score_blank_image_predictions(
    blank_predictions: Sequence[ScoredPrediction], label_set_name: str, valid_only: bool = False
) -> BlankImageBaseline:
    """Each element holds the model's answer on a blank image (`pred`, `valid`) and the truth of the
    real image it stands in for (`truth`)."""
    scores = score_predictions(blank_predictions, label_set_name, valid_only)
    valid_answers = [prediction.pred for prediction in blank_predictions if prediction.valid]
    label_rate = {
        label: (sum(label in pred for pred in valid_answers) / len(valid_answers) if valid_answers else 0.0)
        for label in scores.labels
    }
    return BlankImageBaseline(scores=scores, label_rate=label_rate)


def dataset_baselines(
    truths: Sequence[Iterable[str]],
    label_set_name: str,
    prevalence: Mapping[str, float],
    prevalence_source: str,
    blank_answers: Mapping[str, BlankImageAnswer],
    seed: int = 0,
) -> DatasetBaselines:
    """Both prevalence baselines (every label seen in training; labels drawn at their training
    rates) and one blank-image baseline per checkpoint, its single answer given for every image."""
    truths = [list(truth) for truth in truths]
    blank_images = {}
    for checkpoint, answer in blank_answers.items():
        stand_ins = [ScoredPrediction(truth=truth, pred=answer.pred, valid=answer.valid) for truth in truths]
        baseline = score_blank_image_predictions(stand_ins, label_set_name)
        blank_images[checkpoint] = baseline.model_copy(update={"answer": answer})
    return DatasetBaselines(
        prevalence_source=prevalence_source,
        prevalence=[
            score_prevalence_baseline(truths, prevalence, label_set_name, "threshold", threshold=0.0),
            score_prevalence_baseline(truths, prevalence, label_set_name, "sample", seed=seed),
        ],
        blank_images=blank_images,
    )
