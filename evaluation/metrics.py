"""Multilabel metrics over one label set: per-label precision/recall/F1 and support, micro and macro
averages, fail rate, example-level Jaccard and exact match.

Scoring runs over a chosen label set (`chexpert14`, `nih9`, `nih10`): truths and predictions outside
it are ignored, so NIH images score on the nine categories CheXpert shares with NIH. By default an
invalid (unparseable) completion counts as predicting no label, so a failure costs recall, and it
scores 0 on Jaccard and exact match whatever the truth (on an image with no positive label, "no
label" would otherwise pass for a perfect answer); with `valid_only` the invalid ones are left out
of every metric except the fail rate.

A label masked for an image (the `drop` uncertainty policy) is cleared from that image's truth and
prediction before anything is counted, so it adds to no label's support, TP, FP or FN, and to no
example's Jaccard or exact match.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel
from sklearn.metrics import precision_recall_fscore_support

from evaluation.records import ScoredPrediction
from shared.labels import label_set


class LabelScore(BaseModel):
    precision: float
    recall: float
    f1: float
    support: int  # images that truly have the label
    predicted: int  # images the model gave the label
    # No support and no prediction: F1 is undefined; it scores 0 (and still counts in the macro
    # average, as scikit-learn's zero_division=0 does), flagged so a table can show why.
    flagged: bool


class LabelSetScores(BaseModel):
    label_set: str  # the set's name, e.g. "nih9"
    labels: list[str]
    per_label: dict[str, LabelScore]
    micro_precision: float
    micro_recall: float
    micro_f1: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    fail_rate: float  # invalid completions / all images, whatever `valid_only` says
    jaccard: float  # example-level: mean over images of |truth & pred| / |truth | pred|
    exact_match: float  # images whose predicted set equals the true set exactly
    n_images: int
    n_scored: int  # images the metrics ran over (n_images, or the valid ones with valid_only)
    n_failed: int
    valid_only: bool

    @property
    def flagged_labels(self) -> list[str]:
        return [label for label, score in self.per_label.items() if score.flagged]

    @property
    def per_label_f1(self) -> dict[str, float]:
        return {label: score.f1 for label, score in self.per_label.items()}


@dataclass(frozen=True)
class LabelMatrices:
    """Truth and prediction as multilabel indicator matrices (scored images x labels), after the
    invalid-completion policy and the masks have been applied. The bootstrap resamples the rows."""

    label_set: str
    labels: tuple[str, ...]
    truth: np.ndarray  # bool, (n_scored, n_labels); False where masked
    pred: np.ndarray  # bool, (n_scored, n_labels); all False on an invalid row, False where masked
    n_images: int
    n_failed: int
    valid_only: bool
    valid: np.ndarray | None = None  # bool, (n_scored,); None: every scored row parsed

    @property
    def n_scored(self) -> int:
        return int(self.truth.shape[0])


def indicator_matrix(label_lists: Sequence[Iterable[str]], labels: Sequence[str]) -> np.ndarray:
    """Rows = images, columns = `labels`; a label outside `labels` is ignored."""
    column = {label: index for index, label in enumerate(labels)}
    matrix = np.zeros((len(label_lists), len(labels)), dtype=bool)
    for row, image_labels in enumerate(label_lists):
        for label in image_labels:
            if label in column:
                matrix[row, column[label]] = True
    return matrix


def label_matrices(
    predictions: Sequence[ScoredPrediction], label_set_name: str, valid_only: bool = False
) -> LabelMatrices:
    labels = label_set(label_set_name)
    valid = np.array([prediction.valid for prediction in predictions], dtype=bool)
    truth = indicator_matrix([prediction.truth for prediction in predictions], labels)
    pred = indicator_matrix([prediction.pred for prediction in predictions], labels)
    masked = indicator_matrix([prediction.masked for prediction in predictions], labels)
    pred[~valid] = False
    truth[masked] = False
    pred[masked] = False
    keep = valid if valid_only else np.ones_like(valid)
    return LabelMatrices(
        label_set=label_set_name,
        labels=labels,
        truth=truth[keep],
        pred=pred[keep],
        n_images=len(predictions),
        n_failed=int((~valid).sum()),
        valid_only=valid_only,
        valid=valid[keep],
    )


def example_scores(matrices: LabelMatrices) -> tuple[np.ndarray, np.ndarray]:
    """Per scored image: Jaccard |truth & pred| / |truth | pred| and exact match (1 or 0). Both are
    0 for a completion that failed to parse. An image with no true and no predicted label (an NIH
    image whose findings all lie outside the nine categories, read as clear) is a perfect match."""
    truth, pred = matrices.truth, matrices.pred
    intersection = (truth & pred).sum(axis=1)
    union = (truth | pred).sum(axis=1)
    jaccard = np.divide(intersection, union, out=np.ones(len(union)), where=union > 0)
    exact = (truth == pred).all(axis=1).astype(np.float64)
    if matrices.valid is not None:
        jaccard[~matrices.valid] = 0.0
        exact[~matrices.valid] = 0.0
    return jaccard, exact


def score_matrices(matrices: LabelMatrices) -> LabelSetScores:
    labels, truth, pred = matrices.labels, matrices.truth.astype(int), matrices.pred.astype(int)
    support = truth.sum(axis=0)
    predicted = pred.sum(axis=0)
    if matrices.n_scored:
        precision, recall, f1, _ = precision_recall_fscore_support(truth, pred, average=None, zero_division=0)
        micro = precision_recall_fscore_support(truth, pred, average="micro", zero_division=0)[:3]
        macro = precision_recall_fscore_support(truth, pred, average="macro", zero_division=0)[:3]
        jaccards, exact = example_scores(matrices)
        jaccard, exact_match = float(jaccards.mean()), float(exact.mean())
    else:  # valid_only and every completion failed
        precision = recall = f1 = np.zeros(len(labels))
        micro = macro = (0.0, 0.0, 0.0)
        jaccard = exact_match = 0.0
    per_label = {
        label: LabelScore(
            precision=float(precision[i]),
            recall=float(recall[i]),
            f1=float(f1[i]),
            support=int(support[i]),
            predicted=int(predicted[i]),
            flagged=bool(support[i] == 0 and predicted[i] == 0),
        )
        for i, label in enumerate(labels)
    }
    return LabelSetScores(
        label_set=matrices.label_set,
        labels=list(labels),
        per_label=per_label,
        micro_precision=float(micro[0]),
        micro_recall=float(micro[1]),
        micro_f1=float(micro[2]),
        macro_precision=float(macro[0]),
        macro_recall=float(macro[1]),
        macro_f1=float(macro[2]),
        fail_rate=matrices.n_failed / matrices.n_images if matrices.n_images else 0.0,
        jaccard=jaccard,
        exact_match=exact_match,
        n_images=matrices.n_images,
        n_scored=matrices.n_scored,
        n_failed=matrices.n_failed,
        valid_only=matrices.valid_only,
    )


def score_predictions(
    predictions: Sequence[ScoredPrediction], label_set_name: str, valid_only: bool = False
) -> LabelSetScores:
    return score_matrices(label_matrices(predictions, label_set_name, valid_only))


def score_label_lists(
    truths: Sequence[Iterable[str]],
    preds: Sequence[Iterable[str]],
    valid: Sequence[bool],
    label_set_name: str,
    valid_only: bool = False,
) -> LabelSetScores:
    """The same, from parallel per-image lists; labels must be CheXpert names."""
    if not len(truths) == len(preds) == len(valid):
        raise ValueError(f"{len(truths)} truths, {len(preds)} predictions, {len(valid)} valid flags")
    predictions = [
        ScoredPrediction(truth=list(truth), pred=list(pred), valid=is_valid)
        for truth, pred, is_valid in zip(truths, preds, valid, strict=True)
    ]
    return score_predictions(predictions, label_set_name, valid_only)
