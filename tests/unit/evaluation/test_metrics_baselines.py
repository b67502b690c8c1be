"""Shortcut baselines scored with the same metrics as a model."""

import pytest

from evaluation.baselines import (
    prevalence_sampled_predictions,
    prevalence_threshold_predictions,
    score_blank_image_predictions,
    score_prevalence_baseline,
    training_prevalence,
)
from evaluation.records import ScoredPrediction
from shared.errors import UserError

TRAINING = [["Edema", "Cardiomegaly"], ["Edema"], ["No Finding"], ["Edema", "Support Devices"]]


def test_training_prevalence_counts_images_per_label():
    prevalence = training_prevalence(TRAINING)
    assert prevalence["Edema"] == 0.75
    assert prevalence["Cardiomegaly"] == prevalence["No Finding"] == prevalence["Support Devices"] == 0.25
    assert prevalence["Fracture"] == 0.0 and len(prevalence) == 14
    with pytest.raises(UserError):
        training_prevalence([])


def test_threshold_baseline_predicts_labels_above_threshold_for_every_image():
    prevalence = training_prevalence(TRAINING)
    assert prevalence_threshold_predictions(prevalence, 2, threshold=0.5) == [["Edema"], ["Edema"]]
    assert prevalence_threshold_predictions(prevalence, 1, threshold=0.0) == [
        ["No Finding", "Cardiomegaly", "Edema", "Support Devices"]
    ]
    truths = [["Edema"], ["Cardiomegaly"], [], ["Edema", "Fracture"]]
    baseline = score_prevalence_baseline(truths, prevalence, "chexpert14", mode="threshold", threshold=0.5)
    assert baseline.predicted_labels == ["Edema"] and baseline.seed is None
    # Edema: TP 2, FP 2, FN 0 -> F1 2/3; Cardiomegaly and Fracture: FN only -> 0.
    assert baseline.scores.per_label["Edema"].f1 == pytest.approx(2 / 3)
    assert baseline.scores.macro_f1 == pytest.approx((2 / 3) / 14)
    assert baseline.scores.micro_f1 == pytest.approx(4 / (4 + 2 + 2))


def test_sampled_baseline_is_seeded_and_follows_prevalence():
    prevalence = {"Edema": 0.5, "Fracture": 0.0, "Support Devices": 1.0}
    first = prevalence_sampled_predictions(prevalence, 2000, seed=3)
    assert first == prevalence_sampled_predictions(prevalence, 2000, seed=3)
    assert first != prevalence_sampled_predictions(prevalence, 2000, seed=4)
    assert all("Support Devices" in pred and "Fracture" not in pred for pred in first)
    assert 0.45 < sum("Edema" in pred for pred in first) / 2000 < 0.55
    baseline = score_prevalence_baseline([["Edema"]] * 10, prevalence, "nih9", mode="sample", seed=3)
    assert (baseline.mode, baseline.seed, baseline.threshold, baseline.predicted_labels) == (
        "sample",
        3,
        None,
        None,
    )
    assert "Support Devices" not in baseline.scores.per_label  # outside NIH's nine


def test_blank_image_baseline_scores_answers_against_real_truths():
    answers = [
        ScoredPrediction(truth=["Cardiomegaly"], pred=["Cardiomegaly"], valid=True),
        ScoredPrediction(truth=["Edema"], pred=["Cardiomegaly"], valid=True),
        ScoredPrediction(truth=["Edema"], pred=[], valid=False),
    ]
    blank = score_blank_image_predictions(answers, "chexpert14")
    assert blank.label_rate["Cardiomegaly"] == 1.0 and blank.label_rate["Edema"] == 0.0
    assert blank.scores.per_label["Cardiomegaly"].f1 == pytest.approx(2 / 3)  # TP 1, FP 1
    assert blank.scores.fail_rate == pytest.approx(1 / 3)
