"""Bootstrap intervals: reproducible, containing the estimate, fast; paired differences with the
right sign."""

import time

import numpy as np
import pytest
from sklearn.metrics import f1_score

from evaluation import bootstrap
from evaluation.bootstrap import bootstrap_f1, f1_from_counts, paired_bootstrap, paired_label_matrices
from evaluation.metrics import LabelMatrices, score_matrices
from evaluation.records import PredictionRecord
from shared.errors import UserError
from shared.labels import CHEXPERT_LABELS


def noisy_matrices(n_images: int, flip: float, seed: int, truth_seed: int = 0) -> LabelMatrices:
    truth = np.random.default_rng(truth_seed).random((n_images, 14)) < 0.2
    pred = truth ^ (np.random.default_rng(seed).random((n_images, 14)) < flip)
    return LabelMatrices("chexpert14", CHEXPERT_LABELS, truth, pred, n_images, 0, False)


def test_f1_from_counts_equals_scikit_learn_including_empty_labels():
    matrices = noisy_matrices(60, 0.3, seed=1)
    matrices.truth[:, 3] = False  # a label with no support but some predictions
    matrices.truth[:, 5] = matrices.pred[:, 5] = False  # no support, no predictions: 0
    truth, pred = matrices.truth, matrices.pred
    micro, macro = f1_from_counts((truth & pred).sum(0), (~truth & pred).sum(0), (truth & ~pred).sum(0))
    assert micro == pytest.approx(f1_score(truth, pred, average="micro", zero_division=0))
    assert macro == pytest.approx(f1_score(truth, pred, average="macro", zero_division=0))


def test_intervals_are_reproducible_and_contain_the_estimate():
    matrices = noisy_matrices(300, 0.15, seed=2)
    first = bootstrap_f1(matrices, n_resamples=500, seed=11)
    again = bootstrap_f1(matrices, n_resamples=500, seed=11)
    other_seed = bootstrap_f1(matrices, n_resamples=500, seed=12)
    assert first == again
    assert first.macro_f1 != other_seed.macro_f1
    scores = score_matrices(matrices)
    assert first.micro_f1.estimate == pytest.approx(scores.micro_f1)
    assert first.macro_f1.estimate == pytest.approx(scores.macro_f1)
    for ci in (first.micro_f1, first.macro_f1):
        assert ci.low < ci.estimate < ci.high
        assert 0.01 < ci.high - ci.low < 0.2


def test_interval_does_not_depend_on_how_resamples_are_blocked(monkeypatch):
    matrices = noisy_matrices(100, 0.2, seed=3)
    whole = bootstrap_f1(matrices, n_resamples=200, seed=5)
    monkeypatch.setattr(bootstrap, "_BLOCK_ENTRIES", 700)  # blocks of 7 resamples
    assert bootstrap_f1(matrices, n_resamples=200, seed=5) == whole


def test_thousand_resamples_of_thousand_images_take_well_under_a_second():
    """A guard against a quadratic slip, not a benchmark: CPU time (about 0.03 s on one core), which
    waiting for a busy machine's cores does not inflate as it does wall time."""
    matrices = noisy_matrices(1000, 0.1, seed=4)
    bootstrap_f1(matrices, n_resamples=20)  # warm-up
    start = time.process_time()
    bootstrap_f1(matrices, n_resamples=1000, seed=0)
    assert time.process_time() - start < 1.0


def test_paired_difference_has_the_right_sign():
    worse, better = noisy_matrices(400, 0.25, seed=6), noisy_matrices(400, 0.05, seed=7)
    gain = paired_bootstrap(worse, better, "macro_f1", n_resamples=1000, seed=0)
    assert gain.candidate > gain.baseline
    assert 0 < gain.absolute.low <= gain.absolute.estimate <= gain.absolute.high
    assert gain.relative.estimate == pytest.approx((gain.candidate - gain.baseline) / gain.baseline)
    assert gain.relative.low > 0 and gain.share_of_resamples_worse == 0.0
    loss = paired_bootstrap(better, worse, "micro_f1", n_resamples=1000, seed=0)
    assert loss.absolute.high < 0 and loss.relative.high < 0
    assert loss.share_of_resamples_worse == 1.0
    assert loss.absolute.estimate == pytest.approx(
        score_matrices(worse).micro_f1 - score_matrices(better).micro_f1
    )


def test_paired_difference_of_near_equal_checkpoints_straddles_zero():
    a, b = noisy_matrices(400, 0.15, seed=8), noisy_matrices(400, 0.15, seed=9)
    difference = paired_bootstrap(a, b, n_resamples=1000, seed=0)
    assert difference.absolute.low < 0 < difference.absolute.high


def test_paired_bootstrap_refuses_different_images_or_zero_resamples():
    with pytest.raises(UserError, match="same images"):
        paired_bootstrap(noisy_matrices(50, 0.1, 1), noisy_matrices(50, 0.1, 1, truth_seed=1))
    with pytest.raises(UserError, match="at least 1"):
        bootstrap_f1(noisy_matrices(50, 0.1, 1), n_resamples=0)
    with pytest.raises(UserError, match="metric"):
        paired_bootstrap(noisy_matrices(50, 0.1, 1), noisy_matrices(50, 0.1, 2), metric="jaccard")


def record(image_id: str, truth: list[str], pred: list[str], valid: bool = True, checkpoint: str = "a"):
    return PredictionRecord(
        image_id=image_id,
        dataset="nih",
        checkpoint=checkpoint,
        text="",
        truth=truth,
        pred=pred,
        valid=valid,
        parse_status="ok" if valid else "unparseable",
    )


def test_paired_label_matrices_align_on_image_id_and_valid_in_both():
    baseline = [
        record("x", ["Edema"], ["Edema"]),
        record("y", [], ["Edema"]),
        record("z", ["Edema"], [], False),
    ]
    candidate = [record("z", ["Edema"], ["Edema"]), record("x", ["Edema"], [], False), record("y", [], [])]
    base, cand = paired_label_matrices(baseline, candidate, "nih9")
    edema = base.labels.index("Edema")
    assert base.truth[:, edema].tolist() == cand.truth[:, edema].tolist() == [True, False, True]  # x, y, z
    assert base.pred[:, edema].tolist() == [True, True, False]
    assert cand.pred[:, edema].tolist() == [False, False, True]
    base_valid, cand_valid = paired_label_matrices(baseline, candidate, "nih9", valid_only=True)
    assert base_valid.n_scored == cand_valid.n_scored == 1  # only y parsed in both
    with pytest.raises(UserError, match=r"only in baseline: \['x'\]"):
        paired_label_matrices(baseline, candidate[:1] + candidate[2:], "nih9")
    with pytest.raises(UserError, match="different ground truth"):
        paired_label_matrices(baseline, [record("x", [], []), *candidate[::2]], "nih9")
    with pytest.raises(UserError, match="no image has a parseable completion from both"):
        paired_label_matrices(baseline[2:], candidate[:1], "nih9", valid_only=True)
    with pytest.raises(UserError, match="twice"):
        paired_label_matrices(baseline + baseline[:1], candidate, "nih9")
