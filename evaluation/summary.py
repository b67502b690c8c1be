"""What `cxr-rl score` prints: a per-label table, then one JSON object as the last line."""

from typing import Any

from evaluation.bootstrap import F1Intervals
from evaluation.metrics import LabelSetScores


def score_table(scores: LabelSetScores) -> str:
    width = max(len(label) for label in scores.labels + ["micro average"])
    header = f"{'label':<{width}}  precision  recall     f1  support  predicted"
    lines = [header, "-" * len(header)]
    for label, score in scores.per_label.items():
        flag = "  (no support, no predictions)" if score.flagged else ""
        lines.append(
            f"{label:<{width}}  {score.precision:9.3f}  {score.recall:6.3f}  {score.f1:5.3f}  "
            f"{score.support:7d}  {score.predicted:9d}{flag}"
        )
    lines.append("-" * len(header))
    for name, (p, r, f) in {
        "micro average": (scores.micro_precision, scores.micro_recall, scores.micro_f1),
        "macro average": (scores.macro_precision, scores.macro_recall, scores.macro_f1),
    }.items():
        lines.append(f"{name:<{width}}  {p:9.3f}  {r:6.3f}  {f:5.3f}")
    policy = "valid completions only" if scores.valid_only else "invalid completions predict no label"
    lines.append(
        f"images {scores.n_images}, scored {scores.n_scored} ({policy}), failed {scores.n_failed} "
        f"(fail rate {scores.fail_rate:.3f}); example Jaccard {scores.jaccard:.3f}, exact match {scores.exact_match:.3f}"
    )
    return "\n".join(lines)


def score_summary(scores: LabelSetScores, intervals: F1Intervals | None = None) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "label_set": scores.label_set,
        "valid_only": scores.valid_only,
        "micro_f1": scores.micro_f1,
        "macro_f1": scores.macro_f1,
        "micro_precision": scores.micro_precision,
        "micro_recall": scores.micro_recall,
        "macro_precision": scores.macro_precision,
        "macro_recall": scores.macro_recall,
        "fail_rate": scores.fail_rate,
        "jaccard": scores.jaccard,
        "exact_match": scores.exact_match,
        "n_images": scores.n_images,
        "n_scored": scores.n_scored,
        "n_failed": scores.n_failed,
        "per_label_f1": scores.per_label_f1,
        "flagged_labels": scores.flagged_labels,
    }
    if intervals is not None:
        summary["micro_f1_ci"] = [intervals.micro_f1.low, intervals.micro_f1.high]
        summary["macro_f1_ci"] = [intervals.macro_f1.low, intervals.macro_f1.high]
        summary["bootstrap"] = {
            "n_resamples": intervals.n_resamples,
            "seed": intervals.seed,
            "level": intervals.macro_f1.level,
        }
    return summary
