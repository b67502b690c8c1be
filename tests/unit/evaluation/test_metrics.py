"""Metrics against hand-computed values and against scikit-learn on fixed prediction sets."""

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.metrics import f1_score, precision_recall_fscore_support
from sklearn.preprocessing import MultiLabelBinarizer

from evaluation.metrics import indicator_matrix, score_label_lists, score_predictions
from evaluation.records import ScoredPrediction
from shared.labels import CHEXPERT_LABELS, NIH9_LABELS, label_set

# Four images; the fourth completion failed to parse (its `pred` must be ignored, not scored).
HAND_SET = [
    ScoredPrediction(truth=["Cardiomegaly", "Edema"], pred=["Cardiomegaly"], valid=True),
    ScoredPrediction(truth=["Edema"], pred=["Edema", "Pneumonia"], valid=True),
    ScoredPrediction(truth=["No Finding"], pred=["No Finding"], valid=True),
    ScoredPrediction(truth=["Cardiomegaly"], pred=["Cardiomegaly"], valid=False),
]


def test_hand_computed_default_counts_failures_as_no_prediction():
    scores = score_predictions(HAND_SET, "chexpert14")
    cardiomegaly, edema = scores.per_label["Cardiomegaly"], scores.per_label["Edema"]
    # Cardiomegaly: TP 1 (image 1), FN 1 (image 4 failed, so predicted nothing).
    assert (cardiomegaly.precision, cardiomegaly.recall, cardiomegaly.support) == (1.0, 0.5, 2)
    assert cardiomegaly.f1 == pytest.approx(2 / 3)
    assert edema.f1 == pytest.approx(2 / 3)
    pneumonia = scores.per_label["Pneumonia"]  # predicted once, never true: 0, but not flagged
    assert (pneumonia.f1, pneumonia.support, pneumonia.predicted, pneumonia.flagged) == (0.0, 0, 1, False)
    assert scores.per_label["No Finding"].f1 == 1.0
    assert len(scores.flagged_labels) == 10 and "Fracture" in scores.flagged_labels
    assert scores.per_label["Fracture"].f1 == 0.0
    # micro: TP 3, FP 1, FN 2
    assert scores.micro_precision == pytest.approx(3 / 4)
    assert scores.micro_recall == pytest.approx(3 / 5)
    assert scores.micro_f1 == pytest.approx(2 / 3)
    # macro over all 14 labels, the 10 flagged ones scoring 0
    assert scores.macro_f1 == pytest.approx((2 / 3 + 2 / 3 + 0 + 1) / 14)
    assert scores.macro_precision == pytest.approx(3 / 14)
    assert scores.macro_recall == pytest.approx(2 / 14)
    assert scores.jaccard == pytest.approx((1 / 2 + 1 / 2 + 1 + 0) / 4)
    assert scores.exact_match == pytest.approx(1 / 4)
    assert (scores.fail_rate, scores.n_images, scores.n_scored, scores.n_failed) == (0.25, 4, 4, 1)


def test_hand_computed_valid_only_drops_failures_but_keeps_fail_rate():
    scores = score_predictions(HAND_SET, "chexpert14", valid_only=True)
    assert scores.per_label["Cardiomegaly"].f1 == 1.0
    assert scores.per_label["Cardiomegaly"].support == 1
    assert scores.micro_f1 == pytest.approx(6 / 8)  # TP 3, FP 1, FN 1
    assert scores.macro_f1 == pytest.approx((1 + 2 / 3 + 0 + 1) / 14)
    assert scores.jaccard == pytest.approx(2 / 3)
    assert scores.exact_match == pytest.approx(1 / 3)
    assert (scores.fail_rate, scores.n_scored, scores.valid_only) == (0.25, 3, True)


def test_all_failed_completions():
    failed = [ScoredPrediction(truth=p.truth, pred=p.pred, valid=False) for p in HAND_SET]
    scores = score_predictions(failed, "chexpert14")
    assert scores.fail_rate == 1.0
    assert scores.micro_f1 == scores.micro_recall == scores.macro_f1 == 0.0
    assert all(score.predicted == 0 for score in scores.per_label.values())
    assert scores.per_label["Edema"].support == 2 and not scores.per_label["Edema"].flagged
    valid_only = score_predictions(failed, "chexpert14", valid_only=True)
    assert (valid_only.n_scored, valid_only.fail_rate, valid_only.macro_f1, valid_only.jaccard) == (
        0,
        1.0,
        0.0,
        0.0,
    )


def test_nih_nine_categories_ignore_labels_outside_the_set():
    predictions = [
        # Pleural Effusion and Support Devices lie outside NIH's nine: ignored on both sides.
        ScoredPrediction(
            truth=["Lung Lesion", "Pleural Effusion"],
            pred=["Lung Lesion", "Pleural Effusion", "Support Devices"],
            valid=True,
        ),
        ScoredPrediction(truth=[], pred=[], valid=True),  # e.g. an image with only Infiltration
        ScoredPrediction(truth=["Atelectasis"], pred=["Pleural Effusion"], valid=True),
    ]
    nih9 = score_predictions(predictions, "nih9")
    assert nih9.labels == list(NIH9_LABELS) and len(nih9.labels) == 9
    assert "Pleural Effusion" not in nih9.per_label
    assert nih9.per_label["Lung Lesion"].f1 == 1.0
    assert nih9.per_label["Atelectasis"].f1 == 0.0 and not nih9.per_label["Atelectasis"].flagged
    assert nih9.macro_f1 == pytest.approx(1 / 9)
    assert nih9.micro_f1 == pytest.approx(2 / 3)  # TP 1, FP 0, FN 1
    assert nih9.jaccard == pytest.approx(2 / 3)  # image 2 (nothing, nothing) is a perfect match
    assert nih9.exact_match == pytest.approx(2 / 3)
    nih10 = score_predictions(predictions, "nih10")
    assert nih10.per_label["Pleural Effusion"].f1 == pytest.approx(2 / 3)  # TP 1, FP 1
    assert nih10.micro_f1 == pytest.approx(2 / 3)  # TP 2, FP 1, FN 1


@pytest.mark.parametrize("name", ["chexpert14", "nih9", "nih10"])
@pytest.mark.parametrize("valid_only", [False, True])
def test_matches_scikit_learn_on_random_sets(name, valid_only):
    rng = np.random.default_rng(7)
    truths = [[label for label in CHEXPERT_LABELS if rng.random() < 0.15] for _ in range(200)]
    preds = [[label for label in CHEXPERT_LABELS if rng.random() < 0.2] for _ in range(200)]
    valid = [bool(v) for v in rng.random(200) > 0.1]
    scores = score_label_lists(truths, preds, valid, name, valid_only=valid_only)

    labels = label_set(name)
    keep = [i for i in range(200) if valid[i] or not valid_only]
    binarizer = MultiLabelBinarizer(classes=list(labels))
    y_true = binarizer.fit_transform([[label for label in truths[i] if label in labels] for i in keep])
    y_pred = binarizer.fit_transform(
        [[label for label in preds[i] if label in labels and valid[i]] for i in keep]
    )
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    assert [scores.per_label[label].f1 for label in labels] == pytest.approx(list(f))
    assert [scores.per_label[label].precision for label in labels] == pytest.approx(list(p))
    assert [scores.per_label[label].recall for label in labels] == pytest.approx(list(r))
    assert [scores.per_label[label].support for label in labels] == list(s)
    assert scores.micro_f1 == pytest.approx(f1_score(y_true, y_pred, average="micro", zero_division=0))
    assert scores.macro_f1 == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert scores.fail_rate == pytest.approx(valid.count(False) / 200)


def test_indicator_matrix_ignores_unknown_columns_and_duplicates():
    matrix = indicator_matrix([["Edema", "Edema", "Fracture"], []], ("Edema", "Cardiomegaly"))
    assert matrix.tolist() == [[True, False], [False, False]]


def test_unknown_label_and_bad_lengths_are_rejected():
    with pytest.raises(ValidationError, match="Infiltration"):
        ScoredPrediction(truth=["Infiltration"], pred=[], valid=True)
    with pytest.raises(ValueError, match="2 truths, 1 predictions"):
        score_label_lists([[], []], [[]], [True, True], "chexpert14")
