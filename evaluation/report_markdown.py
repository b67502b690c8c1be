"""The report as markdown: a generalization summary, then one table per dataset with rows = labels
plus the averages and columns = checkpoints (the paper's Tables 5 and 6), best per row in bold."""

from collections.abc import Callable, Sequence

from evaluation.bootstrap import ConfidenceInterval, PairedDifference
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
    role = {config.in_distribution: "in distribution", config.out_of_distribution: "out of distribution"}
    heading = f"## {dataset} ({config.datasets[dataset]}, {role.get(dataset, 'other')})"
    lines = [
        heading,
        "",
        "| Label | " + " | ".join(checkpoints) + " |",
        "|---" * (len(checkpoints) + 1) + "|",
    ]
    for label in results[0].scores.labels:
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
    return lines


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
    ood = config.out_of_distribution
    id_name, ood_name = config.in_distribution, ood or MISSING
    lines += [
        "## Generalization",
        "",
        f"| Checkpoint | ID macro-F1 ({id_name}) | OOD macro-F1 ({ood_name}) "
        f"| ID change vs {report.baseline_checkpoint} | OOD change vs {report.baseline_checkpoint} |",
        "|---|---|---|---|---|",
    ]
    for row in report.generalization:
        lines.append(
            f"| {row.checkpoint} | {_interval(row.in_distribution)} | {_interval(row.out_of_distribution)} "
            f"| {_change(row.in_distribution_change)} | {_change(row.out_of_distribution_change)} |"
        )
    lines.append("")
    for dataset in config.datasets:
        lines += _dataset_section(report, dataset)
    if chart_files:
        lines += ["## Charts", ""] + [f"![{name}]({name})" for name in chart_files] + [""]
    return "\n".join(lines).rstrip("\n") + "\n"
