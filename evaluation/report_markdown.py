"""The report as markdown: a generalization summary, then one table per dataset with rows = labels
plus the averages and columns = checkpoints, best per row in bold: the layout of the paper's Tables
5 (CheXpert, 14 labels) and 6 (NIH, 9 categories), whose rows list the labels alphabetically
("Atelectasis, Cardiomegaly, Consolidation, Edema, ...") before the overall macro average."""

from collections.abc import Callable, Sequence

from evaluation.bootstrap import ConfidenceInterval, PairedDifference
from evaluation.metrics import LabelSetScores
from evaluation.report import EvaluationReport

FLAG = "†"
MISSING = "–"


def _number(value: float) -> str:
    return f"{value:.3f}"


def _interval(ci: ConfidenceInterval | None) -> str:
    return MISSING if ci is None else f"{ci.estimate:.3f} [{ci.low:.3f}, {ci.high:.3f}]"


def _change(change: PairedDifference | None) -> str:
    if change is None:
        return MISSING
    if change.relative is None:  # the baseline scored 0: only the absolute change means anything
        ci = change.absolute
        return f"{ci.estimate:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}] (absolute)"
    ci = change.relative
    return f"{ci.estimate:+.1%} [{ci.low:+.1%}, {ci.high:+.1%}]"


def _table_row(
    name: str, cells: Sequence[float | None], best: Callable[..., float], notes: Sequence[str] = ()
) -> str:
    """One row; every cell equal (at the shown precision) to the best is bold, once two or more
    checkpoints have a value."""
    shown = [None if value is None else _number(value) for value in cells]
    present = [float(text) for text in shown if text is not None]
    winner = best(present) if len(present) >= 2 else None
    texts = []
    for index, text in enumerate(shown):
        if text is None:
            texts.append(MISSING)
            continue
        note = notes[index] if notes else ""
        texts.append(f"**{text}**{note}" if winner is not None and float(text) == winner else f"{text}{note}")
    return f"| {name} | " + " | ".join(texts) + " |"


def _dataset_section(report: EvaluationReport, dataset: str) -> list[str]:
    config = report.config
    checkpoints = [c for c in report.checkpoints if report.result(c, dataset) is not None]
    if not checkpoints:
        return []
    results = [report.result(c, dataset) for c in checkpoints]
    heading = f"## {dataset} ({config.datasets[dataset]}, {_role(report, dataset)})"
    lines = [
        heading,
        "",
        "| Label | " + " | ".join(checkpoints) + " |",
        "|---" * (len(checkpoints) + 1) + "|",
    ]
    for label in sorted(results[0].scores.labels):  # the paper's row order
        label_scores = [result.scores.per_label[label] for result in results]
        notes = [FLAG if score.flagged else "" for score in label_scores]
        lines.append(_table_row(label, [score.f1 for score in label_scores], max, notes))
    lines.append(_table_row("**Macro F1**", [r.scores.macro_f1 for r in results], max))
    lines.append(_table_row("Micro F1", [r.scores.micro_f1 for r in results], max))
    lines.append(_table_row("Fail rate", [r.scores.fail_rate for r in results], min))
    lines.append("| Images | " + " | ".join(str(r.scores.n_images) for r in results) + " |")
    lines.append("")
    lines.append(
        "Macro-F1 "
        + f"{config.level:.0%} CI: "
        + "; ".join(
            f"{c} {_interval(r.intervals.macro_f1)}" for c, r in zip(checkpoints, results, strict=True)
        )
        + "."
    )
    if any(score.flagged for r in results for score in r.scores.per_label.values()):
        lines.append("")
        lines.append(
            f"{FLAG} No image has this label and the checkpoint never predicted it: F1 is undefined, "
            "scored 0 and kept in the macro average."
        )
    lines.append("")
    return lines + _baselines_section(report, dataset)


def _role(report: EvaluationReport, dataset: str) -> str:
    if dataset in report.config.in_distribution:
        return "in distribution"
    return "out of distribution" if dataset in report.config.out_of_distribution else "other"


def generalization_lines(report: EvaluationReport) -> list[str]:
    """Per checkpoint: each set's macro-F1 [CI] tagged ID or OOD, the mean over each role when it
    has more than one set, and each role's change from the baseline checkpoint."""
    config = report.config
    baseline = report.baseline_checkpoint
    columns = [(name, "ID") for name in config.in_distribution] + [
        (name, "OOD") for name in config.out_of_distribution
    ]
    header = ["Checkpoint"] + [f"{name} ({tag})" for name, tag in columns]
    if len(config.in_distribution) > 1:
        header.append("ID mean")
    if len(config.out_of_distribution) > 1:
        header.append("OOD mean")
    header += [f"ID change vs {baseline}", f"OOD change vs {baseline}"]
    lines = [
        "Macro-F1 per set (ID: in distribution, OOD: out of distribution); a change is that of the "
        "mean over the role's sets.",
        "",
        "| " + " | ".join(header) + " |",
        "|---" * len(header) + "|",
    ]
    for row in report.generalization:
        cells = [row.checkpoint]
        for name, _ in columns:
            result = report.result(row.checkpoint, name)
            cells.append(_interval(result.intervals.macro_f1 if result else None))
        if len(config.in_distribution) > 1:
            cells.append(_interval(row.in_distribution))
        if len(config.out_of_distribution) > 1:
            cells.append(_interval(row.out_of_distribution))
        cells += [_change(row.in_distribution_change), _change(row.out_of_distribution_change)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _baselines_section(report: EvaluationReport, dataset: str) -> list[str]:
    """The shortcut baselines of a dataset, then each checkpoint that does no better on real images
    than on a blank one (or than a prevalence baseline): it reads label priors, not the image."""
    baselines = report.baselines.get(dataset)
    if baselines is None:
        return []
    lines = [
        f"### Shortcut baselines on {dataset}",
        "",
        f"Prevalence from {baselines.prevalence_source}. A blank image is a uniform mid-gray film of the "
        "dataset's typical size; each checkpoint's one answer on it is scored against every image's truth.",
        "",
        "| Shortcut | Macro F1 | Micro F1 | Jaccard | Fail rate | Predicts |",
        "|---|---|---|---|---|---|",
    ]
    for baseline in baselines.prevalence:
        if baseline.mode == "threshold":
            name = f"Training prevalence above {baseline.threshold:g}, every image"
            predicts = ", ".join(baseline.predicted_labels or []) or "nothing"
        else:
            name = f"Training prevalence, labels drawn at their rates (seed {baseline.seed})"
            predicts = "each label with its training share"
        lines.append(_baseline_row(name, baseline.scores, predicts))
    for checkpoint, blank in baselines.blank_images.items():
        answer = blank.answer
        size = f", {answer.width}x{answer.height}" if answer else ""
        if answer is None:
            predicts = MISSING
        elif answer.valid:
            predicts = ", ".join(answer.pred) or "nothing"
        else:
            predicts = f"unparseable ({answer.parse_status})"
        lines.append(_baseline_row(f"Blank image, {checkpoint}{size}", blank.scores, predicts))
    lines.append("")
    warnings = _prior_warnings(report, dataset)
    if warnings:
        lines += warnings + [""]
    return lines


def _baseline_row(name: str, scores: LabelSetScores, predicts: str) -> str:
    numbers = [scores.macro_f1, scores.micro_f1, scores.jaccard, scores.fail_rate]
    return f"| {_cell(name)} | " + " | ".join(_number(v) for v in numbers) + f" | {_cell(predicts)} |"


def _prior_warnings(report: EvaluationReport, dataset: str) -> list[str]:
    baselines = report.baselines[dataset]
    best_prevalence = max((b.scores.macro_f1 for b in baselines.prevalence), default=None)
    warnings = []
    for checkpoint in report.checkpoints:
        result = report.result(checkpoint, dataset)
        if result is None:
            continue
        macro = result.scores.macro_f1
        blank = baselines.blank_images.get(checkpoint)
        if (
            blank is not None
            and blank.answer is not None
            and blank.answer.valid
            and macro <= blank.scores.macro_f1
        ):
            warnings.append(
                f"- **{checkpoint}** scores no better on real images (macro-F1 {macro:.3f}) than its answer on a "
                f"blank image ({blank.scores.macro_f1:.3f}): it answers from label priors, not from the image."
            )
        elif best_prevalence is not None and macro <= best_prevalence:
            warnings.append(
                f"- **{checkpoint}** scores no better (macro-F1 {macro:.3f}) than the best prevalence "
                f"baseline ({best_prevalence:.3f}), which never looks at an image."
            )
    return warnings


def render_markdown(report: EvaluationReport, chart_files: Sequence[str] = ()) -> str:
    config = report.config
    invalid_policy = (
        "Only parseable completions are scored (failures count in the fail rate only)."
        if config.valid_only
        else "Unparseable completions count as predicting no label."
    )
    lines = [
        "# Evaluation report",
        "",
        f"Checkpoints: {', '.join(report.checkpoints)}. Changes are relative to `{report.baseline_checkpoint}`. "
        f"Intervals: {config.level:.0%} percentile bootstrap over images, {config.n_resamples} resamples, "
        f"seed {config.seed}; changes use a paired bootstrap on the same images. {invalid_policy} "
        "Best value per row in bold. Every number can be recomputed from `predictions.jsonl` with `cxr-rl score`.",
        "",
    ]
    lines += ["## Generalization", ""] + generalization_lines(report)
    for dataset in config.datasets:
        lines += _dataset_section(report, dataset)
    if chart_files:
        lines += ["## Charts", ""] + [f"![{name}]({name})" for name in chart_files] + [""]
    return "\n".join(lines).rstrip("\n") + "\n"
