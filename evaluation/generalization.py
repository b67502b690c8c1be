"""The ID-vs-OOD summary of a report: per checkpoint, the mean macro-F1 over its in-distribution
sets and over its out-of-distribution sets, with bootstrap intervals, and the change of each mean
from the baseline checkpoint by a paired bootstrap (the paper's question: did RL help in
distribution, and what did it cost out of distribution?).

Each set is resampled on its own (sets hold different images), the k-th set of a role with seed
`seed + k`; a mean's resample is the mean of its sets' resamples. With one set per role this is
exactly that set's bootstrap.
"""

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from evaluation.bootstrap import (
    ConfidenceInterval,
    PairedDifference,
    difference_from_samples,
    paired_label_matrices,
    percentile_interval,
    resampled_macro_f1,
)
from evaluation.metrics import label_matrices
from evaluation.records import CheckpointRecords
from evaluation.report_config import ReportConfig


class GeneralizationRow(BaseModel):
    checkpoint: str
    in_distribution: ConfidenceInterval | None  # mean macro-F1 over the ID sets
    out_of_distribution: ConfidenceInterval | None  # mean macro-F1 over the OOD sets
    in_distribution_change: PairedDifference | None
    out_of_distribution_change: PairedDifference | None


def _role_mean(
    records: CheckpointRecords,
    checkpoint: str,
    names: Sequence[str],
    label_sets: dict[str, str],
    options: "ReportConfig",
) -> ConfidenceInterval | None:
    present = [name for name in names if name in records[checkpoint]]
    if not present:
        return None
    points, samples = [], []
    for index, name in enumerate(names):
        if name not in present:
            continue
        matrices = label_matrices(records[checkpoint][name], label_sets[name], options.valid_only)
        point, resampled = resampled_macro_f1([matrices], options.n_resamples, options.seed + index)
        points.append(point[0])
        samples.append(resampled[0])
    return percentile_interval(float(np.mean(points)), np.mean(samples, axis=0), options.level)


def _role_change(
    records: CheckpointRecords,
    checkpoint: str,
    baseline: str,
    names: Sequence[str],
    label_sets: dict[str, str],
    options: "ReportConfig",
) -> PairedDifference | None:
    """The change of the role's mean; None unless both checkpoints have every set of the role."""
    if checkpoint == baseline or not names:
        return None
    if any(name not in records[checkpoint] or name not in records[baseline] for name in names):
        return None
    base_points, candidate_points, base_samples, candidate_samples = [], [], [], []
    for index, name in enumerate(names):
        pair = paired_label_matrices(
            records[baseline][name], records[checkpoint][name], label_sets[name], options.valid_only
        )
        points, resampled = resampled_macro_f1(list(pair), options.n_resamples, options.seed + index)
        base_points.append(points[0])
        candidate_points.append(points[1])
        base_samples.append(resampled[0])
        candidate_samples.append(resampled[1])
    return difference_from_samples(
        "macro_f1",
        (float(np.mean(base_points)), float(np.mean(candidate_points))),
        (np.mean(base_samples, axis=0), np.mean(candidate_samples, axis=0)),
        options.level,
        options.seed,
    )


def generalization_rows(
    records: CheckpointRecords, config: "ReportConfig", baseline: str
) -> list[GeneralizationRow]:
    """One row per checkpoint; `config` is the report's (datasets, roles, n_resamples, seed, level,
    valid_only)."""
    rows = []
    for checkpoint in records:
        roles = {}
        for role in ("in_distribution", "out_of_distribution"):
            names = getattr(config, role)
            roles[role] = _role_mean(records, checkpoint, names, config.datasets, config)
            roles[f"{role}_change"] = _role_change(
                records, checkpoint, baseline, names, config.datasets, config
            )
        rows.append(GeneralizationRow(checkpoint=checkpoint, **roles))
    return rows
