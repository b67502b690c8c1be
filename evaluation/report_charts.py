"""PNG charts for a report (matplotlib, Agg backend): per-label F1 bars per checkpoint, and in- vs
out-of-distribution macro-F1 per checkpoint with bootstrap intervals. Each returns PNG bytes."""

import io

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from evaluation.report import EvaluationReport  # noqa: E402


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def plot_per_label_f1(report: EvaluationReport, dataset: str) -> bytes:
    checkpoints = [c for c in report.checkpoints if report.result(c, dataset) is not None]
    labels = report.result(checkpoints[0], dataset).scores.labels + ["Macro F1"]
    width = 0.8 / len(checkpoints)
    positions = np.arange(len(labels))
    figure, axes = plt.subplots(figsize=(max(6.0, 0.7 * len(labels) * max(1, len(checkpoints) / 2)), 4.5))
    for index, checkpoint in enumerate(checkpoints):
        scores = report.result(checkpoint, dataset).scores
        values = [scores.per_label[label].f1 for label in labels[:-1]] + [scores.macro_f1]
        axes.bar(positions + (index - (len(checkpoints) - 1) / 2) * width, values, width, label=checkpoint)
    axes.set_xticks(positions, labels, rotation=45, ha="right")
    axes.set_ylim(0, 1)
    axes.set_ylabel("F1")
    axes.set_title(f"Per-label F1 on {dataset} ({report.config.datasets[dataset]})")
    axes.legend(fontsize="small")
    return _png(figure)


def plot_generalization(report: EvaluationReport) -> bytes:
    config = report.config
    roles = [(name, "in distribution") for name in config.in_distribution]
    roles += [(name, "out of distribution") for name in config.out_of_distribution]
    positions = np.arange(len(report.checkpoints))
    width = 0.8 / len(roles)
    figure, axes = plt.subplots(figsize=(max(5.0, 1.2 * len(report.checkpoints)), 4.0))
    for index, (dataset, role) in enumerate(roles):
        estimates, lower, upper = [], [], []
        for checkpoint in report.checkpoints:
            result = report.result(checkpoint, dataset)
            ci = result.intervals.macro_f1 if result else None
            estimates.append(ci.estimate if ci else np.nan)
            lower.append(ci.estimate - ci.low if ci else 0.0)
            upper.append(ci.high - ci.estimate if ci else 0.0)
        offset = (index - (len(roles) - 1) / 2) * width
        axes.bar(
            positions + offset, estimates, width, yerr=[lower, upper], capsize=3, label=f"{dataset} ({role})"
        )
    axes.set_xticks(positions, report.checkpoints, rotation=30, ha="right")
    axes.set_ylim(0, 1)
    axes.set_ylabel(f"macro-F1 ({config.level:.0%} CI)")
    axes.set_title("In- vs out-of-distribution macro-F1")
    axes.legend(fontsize="small")
    return _png(figure)
