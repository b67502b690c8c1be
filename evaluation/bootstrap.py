"""Bootstrap confidence intervals for micro and macro F1, resampling images, and a paired bootstrap
for the difference between two checkpoints on the same images.

Vectorised: each resample is a vector of how often each image was drawn, so the per-label TP/FP/FN
counts of all resamples are one matrix product (resamples x images) @ (images x labels). F1 from
counts, 2TP / (2TP + FP + FN) and 0 when that is 0/0, equals scikit-learn's F1 with zero_division=0.
"""

from collections.abc import Iterator, Sequence

import numpy as np
from pydantic import BaseModel

from evaluation.metrics import LabelMatrices, label_matrices
from evaluation.records import PredictionRecord
from shared.errors import UserError

# Resamples are drawn in blocks so that a block's weight matrix stays near this many entries.
_BLOCK_ENTRIES = 4_000_000


class ConfidenceInterval(BaseModel):
    estimate: float  # on the full set of images
    low: float
    high: float
    level: float = 0.95


class F1Intervals(BaseModel):
    micro_f1: ConfidenceInterval
    macro_f1: ConfidenceInterval
    n_resamples: int
    seed: int


class PairedDifference(BaseModel):
    """candidate minus baseline on the same images, for one metric."""

    metric: str  # "micro_f1" or "macro_f1"
    baseline: float
    candidate: float
    absolute: ConfidenceInterval  # candidate - baseline
    relative: ConfidenceInterval | None  # (candidate - baseline) / baseline; None when baseline is 0
    share_of_resamples_worse: float  # resamples where the candidate scored below the baseline
    n_resamples: int
    seed: int


def f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Micro and macro F1 from per-label counts of shape (..., labels)."""
    micro_denominator = 2 * tp.sum(-1) + fp.sum(-1) + fn.sum(-1)
    micro = np.divide(
        2 * tp.sum(-1), micro_denominator, out=np.zeros(micro_denominator.shape), where=micro_denominator > 0
    )
    denominator = 2 * tp + fp + fn
    per_label = np.divide(2 * tp, denominator, out=np.zeros(denominator.shape), where=denominator > 0)
    return micro, per_label.mean(-1)


def _image_counts(matrices: LabelMatrices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    truth, pred = matrices.truth, matrices.pred
    return (
        (truth & pred).astype(np.float64),
        (~truth & pred).astype(np.float64),
        (truth & ~pred).astype(np.float64),
    )


def _resample_weights(n_images: int, n_resamples: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Blocks of (resamples, images) draw counts; each row sums to n_images."""
    block = max(1, _BLOCK_ENTRIES // max(n_images, 1))
    for start in range(0, n_resamples, block):
        rows = min(block, n_resamples - start)
        drawn = rng.integers(0, n_images, size=(rows, n_images))
        flat = (drawn + n_images * np.arange(rows)[:, None]).ravel()
        yield np.bincount(flat, minlength=rows * n_images).reshape(rows, n_images).astype(np.float64)


def _resampled_f1(
    matrices_list: Sequence[LabelMatrices], n_resamples: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Micro and macro F1 of every resample, the same resamples for every element of the list."""
    n_images = matrices_list[0].n_scored
    counts = [_image_counts(matrices) for matrices in matrices_list]
    micro: list[list[np.ndarray]] = [[] for _ in matrices_list]
    macro: list[list[np.ndarray]] = [[] for _ in matrices_list]
    for weights in _resample_weights(n_images, n_resamples, np.random.default_rng(seed)):
        for index, (tp, fp, fn) in enumerate(counts):
            block_micro, block_macro = f1_from_counts(weights @ tp, weights @ fp, weights @ fn)
            micro[index].append(block_micro)
            macro[index].append(block_macro)
    return [(np.concatenate(mi), np.concatenate(ma)) for mi, ma in zip(micro, macro, strict=True)]


def resampled_macro_f1(
    matrices_list: Sequence[LabelMatrices], n_resamples: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Macro-F1 of each element on all its images (shape k) and on each of the same `n_resamples`
    resamples of the images (shape k x n_resamples): a paired bootstrap over any number of
    checkpoints scored on the same images in the same order."""
    sizes = {matrices.n_scored for matrices in matrices_list}
    if len(sizes) != 1:
        raise UserError(
            f"a paired bootstrap needs the same images for every checkpoint, got sizes {sorted(sizes)}"
        )
    _check_resampling(sizes.pop(), n_resamples, 0.95)
    resampled = _resampled_f1(matrices_list, n_resamples, seed)
    points = np.array([_point_f1(matrices)[1] for matrices in matrices_list])
    return points, np.stack([macro for _, macro in resampled])


def percentile_interval(estimate: float, samples: np.ndarray, level: float) -> ConfidenceInterval:
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(samples, [tail, 100 - tail])
    return ConfidenceInterval(estimate=float(estimate), low=float(low), high=float(high), level=level)


def _point_f1(matrices: LabelMatrices) -> tuple[float, float]:
    micro, macro = f1_from_counts(*(counts.sum(0) for counts in _image_counts(matrices)))
    return float(micro), float(macro)


def _check_resampling(n_images: int, n_resamples: int, level: float) -> None:
    if n_images == 0:
        raise UserError("cannot bootstrap over zero scored images")
    if n_resamples < 1:
        raise UserError(f"the number of bootstrap resamples must be at least 1, not {n_resamples}")
    if not 0 < level < 1:
        raise UserError(f"confidence level must lie between 0 and 1, not {level}")


def bootstrap_f1(
    matrices: LabelMatrices, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> F1Intervals:
    """Percentile intervals for micro and macro F1, resampling images with replacement."""
    _check_resampling(matrices.n_scored, n_resamples, level)
    ((micro, macro),) = _resampled_f1([matrices], n_resamples, seed)
    micro_estimate, macro_estimate = _point_f1(matrices)
    return F1Intervals(
        micro_f1=percentile_interval(micro_estimate, micro, level),
        macro_f1=percentile_interval(macro_estimate, macro, level),
        n_resamples=n_resamples,
        seed=seed,
    )


def paired_bootstrap(
    baseline: LabelMatrices,
    candidate: LabelMatrices,
    metric: str = "macro_f1",
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedDifference:
    """Both checkpoints are scored on the same resamples of the same images, so the interval of the
    difference leaves out the image-to-image variation the two share."""
    if metric not in ("micro_f1", "macro_f1"):
        raise UserError(f"paired bootstrap metric must be 'micro_f1' or 'macro_f1', not {metric!r}")
    if baseline.labels != candidate.labels or not np.array_equal(baseline.truth, candidate.truth):
        raise UserError("a paired bootstrap needs both checkpoints scored on the same images and labels")
    _check_resampling(baseline.n_scored, n_resamples, level)
    resampled = _resampled_f1([baseline, candidate], n_resamples, seed)
    pick = 0 if metric == "micro_f1" else 1
    return difference_from_samples(
        metric,
        (_point_f1(baseline)[pick], _point_f1(candidate)[pick]),
        (resampled[0][pick], resampled[1][pick]),
        level,
        seed,
    )


def difference_from_samples(
    metric: str,
    points: tuple[float, float],
    samples: tuple[np.ndarray, np.ndarray],
    level: float,
    seed: int,
) -> PairedDifference:
    """candidate - baseline from both scores and their paired resamples (baseline first)."""
    base_point, candidate_point = points
    base_samples, candidate_samples = samples
    n_resamples = len(base_samples)
    difference = candidate_samples - base_samples
    relative = None
    if base_point > 0:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(base_samples > 0, difference / base_samples, np.nan)
        if not np.isnan(ratios).all():
            relative = percentile_interval((candidate_point - base_point) / base_point, ratios, level)
    return PairedDifference(
        metric=metric,
        baseline=base_point,
        candidate=candidate_point,
        absolute=percentile_interval(candidate_point - base_point, difference, level),
        relative=relative,
        share_of_resamples_worse=float((difference < 0).mean()),
        n_resamples=n_resamples,
        seed=seed,
    )


def paired_label_matrices(
    baseline: Sequence[PredictionRecord],
    candidate: Sequence[PredictionRecord],
    label_set_name: str,
    valid_only: bool = False,
) -> tuple[LabelMatrices, LabelMatrices]:
    """Align two checkpoints' records on `image_id`. With `valid_only` an image is kept only where
    both completions parsed, so the two are still compared on the same images."""
    base_by_id = _by_image_id(baseline, "baseline")
    candidate_by_id = _by_image_id(candidate, "candidate")
    if base_by_id.keys() != candidate_by_id.keys():
        only_base = sorted(base_by_id.keys() - candidate_by_id.keys())[:3]
        only_candidate = sorted(candidate_by_id.keys() - base_by_id.keys())[:3]
        raise UserError(
            "paired comparison needs the same images for both checkpoints; "
            f"only in baseline: {only_base}, only in candidate: {only_candidate}"
        )
    image_ids = sorted(base_by_id)
    if valid_only:
        image_ids = [i for i in image_ids if base_by_id[i].valid and candidate_by_id[i].valid]
        if not image_ids:
            raise UserError(
                "paired comparison with valid_only: no image has a parseable completion from both"
            )
    for image_id in image_ids:
        if base_by_id[image_id].truth != candidate_by_id[image_id].truth:
            raise UserError(f"image {image_id!r} has different ground truth in the two checkpoints' records")
    base_matrices = label_matrices([base_by_id[i] for i in image_ids], label_set_name)
    candidate_matrices = label_matrices([candidate_by_id[i] for i in image_ids], label_set_name)
    return base_matrices, candidate_matrices


def _by_image_id(records: Sequence[PredictionRecord], role: str) -> dict[str, PredictionRecord]:
    by_id: dict[str, PredictionRecord] = {}
    for record in records:
        if record.image_id in by_id:
            raise UserError(f"{role} checkpoint {record.checkpoint!r} has image {record.image_id!r} twice")
        by_id[record.image_id] = record
    return by_id
