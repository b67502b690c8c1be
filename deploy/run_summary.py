"""`summary.md` and `summary.json`: what the run did. The data sets (selection sets apart from
report sets), the final GRPO step, every evaluated step with its 95% intervals, the checkpoint each
selection rule chose and why, the OOD early warnings, the final report's ID-vs-OOD summary on the
report sets, timings and the config. `summary.json` holds the same in machine-readable form."""

import json
from pathlib import Path
from typing import Any

from deploy.config import RunConfig
from deploy.embedded import RunInputs
from deploy.learned import learned_lines
from deploy.run_outcome import RunOutcome
from evaluation.report import read_report
from evaluation.report_markdown import generalization_lines
from shared.atomic_files import write_atomically

HEADLINE = ("reward_mean", "reward_std", "kl", "entropy", "completion_len_mean", "clip_low_frac", "clip_high_frac",
            "zero_variance_groups", "logprob_diff_max", "grad_norm")  # fmt: skip
TIME_SPLIT = ("rollout_s", "reward_s", "train_s", "sync_s", "checkpoint_s", "step_s")
PAPER_OOD = "the paper reports two out-of-distribution sets side by side (CheXpert, Table 5; NIH, Table 6)"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _with_ci(value: float | None, ci: list[float] | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def sets_section(config: RunConfig, outcome: RunOutcome) -> list[str]:
    inputs, validation = outcome.inputs, outcome.validation
    lines = ["", "## Data sets", ""]
    lines.append(
        "Selection sets are scored every K GRPO steps to choose a checkpoint; report sets only at the end. "
        "They share no image, and no selection set holds a test-split row (checked before training)."
    )
    lines += ["", "| set | kind | manifest | scored on |", "| --- | --- | --- | --- |"]
    for name, (subset, label_set) in validation.datasets.items():
        role = "ID selection" if name == "val" else "OOD selection"
        lines.append(f"| {name} | {role} | `{subset}` | {label_set}, subset `{validation.digests[name]}` |")
    for report in inputs.report_sets:
        role = "ID report" if report.role == "in_distribution" else "OOD report"
        lines.append(f"| {report.name} | {role} | `{report.manifest}` | {report.label_set or 'inferred'} |")
    lines += [f"- {note}" for note in ood_report_notes(inputs) + list(inputs.notes)]
    return lines


def ood_report_notes(inputs: RunInputs) -> list[str]:
    ood = [report.name for report in inputs.report_sets if report.role == "out_of_distribution"]
    if len(ood) >= 2:
        return [f"{len(ood)} out-of-distribution report sets ({', '.join(ood)}), as {PAPER_OOD}"]
    if len(ood) == 1:
        return [f"one out-of-distribution report set ({ood[0]}); {PAPER_OOD}: add a data.report_sets entry"]
    return [f"no out-of-distribution report set; {PAPER_OOD}"]


def validation_section(points: list[dict[str, Any]], level: float) -> list[str]:
    if not points:
        return []
    lines = [
        "",
        "## Validation during GRPO (selection sets)",
        "",
        f"Macro-F1 with its {level:.0%} bootstrap interval; every step on the same images. Skill: macro-F1 "
        "minus the best shortcut baseline's on the ID set (paired bootstrap).",
        "",
        "| step | ID macro-F1 | OOD macro-F1 | ID fail rate | skill over best shortcut | distinct answers |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for p in points:
        skill = _with_ci(p.get("skill_over_baseline"), p.get("skill_over_baseline_ci"))
        lines.append(
            f"| {p['step']} | {_with_ci(p.get('id_macro_f1'), p.get('id_ci'))} | "
            f"{_with_ci(p.get('ood_macro_f1'), p.get('ood_ci'))} | {p.get('id_fail_rate', 0.0):.2f} | {skill} | "
            f"{p.get('distinct_answer_sets', '–')} |"
        )
    if not any("ood_macro_f1" in p for p in points):
        lines.append("- no OOD selection set (data.ood_val_manifest): OOD is not tracked while training")
    warnings = [p["early_warning"] for p in points if p.get("early_warning")]
    lines += [f"- **early warning**: {warning}" for warning in warnings]
    unparseable = unparseable_warning(points)
    if unparseable:
        lines += [f"- **warning**: {unparseable}"]
    return lines


def selection_section(selection: dict[str, Any]) -> list[str]:
    if not selection:
        return []
    chosen = selection["chosen"]
    lines = [
        "",
        "## Checkpoint selection",
        "",
        f"Rule `{selection['rule']}` chose step **{chosen['step']}** (best raw score at step {chosen['best_step']}; "
        f"steps not significantly below it: {chosen['tied_steps']}). Tie rule: {chosen['tie_rule']}, at "
        f"{selection['level']:.0%} with {selection['n_resamples']} paired resamples.",
        "",
        "| rule | chooses step | best raw step | tied steps | ID macro-F1 | OOD macro-F1 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for rule, choice in selection["by_rule"].items():
        lines.append(
            f"| {rule} | {choice['step']} | {choice['best_step']} | {choice['tied_steps']} | "
            f"{_with_ci(choice.get('id_macro_f1'), choice.get('id_ci'))} | "
            f"{_with_ci(choice.get('ood_macro_f1'), choice.get('ood_ci'))} |"
        )
    return lines


def final_section(run_dir: Path, report: dict[str, Any] | None) -> list[str]:
    if not report:
        return ["", "## Final evaluation", "", "No report sets: the run has no final report on test sets."]

    evaluation_report = read_report(report["files"]["json_path"])
    lines = [
        "",
        "## Final evaluation (report sets)",
        "",
        f"Full report, one table per set in the layout of the paper's Tables 5 and 6: "
        f"`{Path(report['folder']).relative_to(run_dir)}/report.md`",
        "",
    ]
    return lines + generalization_lines(evaluation_report)


def write_run_summary(
    run_dir: Path,
    config: RunConfig,
    outcome: RunOutcome,
    grpo_metrics: list[dict[str, Any]],
    selection: dict[str, Any],
    report: dict[str, Any] | None,
    timings: dict[str, float],
    plots: list[Path],
) -> Path:
    validation = outcome.validation
    points = sorted(validation.points, key=lambda p: p["step"])
    summary = summary_content(config, outcome, points, grpo_metrics, selection, report, timings)
    lines = [f"# Run `{config.name}`", "", "## What was learned", ""]
    lines += [f"- {line}" for line in learned_lines(summary)] or ["- nothing was evaluated"]
    lines += [""]
    grpo_config = outcome.grpo_config
    lines += [
        f"- model: `{grpo_config.model}`; SFT adapter: `{grpo_config.sft_adapter}`",
        f"- GRPO steps: {outcome.final_step} of {grpo_config.max_steps}; adapter `{grpo_config.adapter_name}` "
        f"versions 0..{outcome.final_step} published to {config.rollout.replicas} replica(s)",
    ]
    if grpo_metrics:
        last = grpo_metrics[-1]
        lines.append(f"- reward: `{last.get('reward_name')}` version `{last.get('reward_version')}`")
        lines += ["", "## Final GRPO step", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {key} | {_fmt(last[key])} |" for key in HEADLINE if key in last]
        lines += [
            "",
            "## Mean step time split (s)",
            "",
            "| " + " | ".join(TIME_SPLIT) + " |",
            "|" + " --- |" * len(TIME_SPLIT),
        ]
        means = [sum(m.get(key, 0.0) for m in grpo_metrics) / len(grpo_metrics) for key in TIME_SPLIT]
        lines.append("| " + " | ".join(f"{value:.3f}" for value in means) + " |")
    lines += sets_section(config, outcome)
    lines += validation_section(points, config.evaluation.confidence)
    lines += selection_section(selection)
    lines += final_section(run_dir, report)
    lines += ["", "## Timings (s)", "", "| phase | seconds |", "| --- | --- |"]
    lines += [f"| {key.removesuffix('_s')} | {value:.1f} |" for key, value in timings.items()]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{plot.stem}]({plot.relative_to(run_dir)})" for plot in plots]
    lines += ["", "## Config", "", "```json", json.dumps(config.model_dump(mode="json"), indent=2), "```", ""]
    path = write_atomically(run_dir / "summary.md", "\n".join(lines))
    write_atomically(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return path


VALIDATION_KEYS = ("step", "id_macro_f1", "id_ci", "ood_macro_f1", "ood_ci", "skill_over_baseline",
                   "skill_over_baseline_ci", "best_shortcut", "distinct_answer_sets")  # fmt: skip


def summary_content(
    config: RunConfig,
    outcome: RunOutcome,
    points: list[dict[str, Any]],
    grpo_metrics: list[dict[str, Any]],
    selection: dict[str, Any],
    report: dict[str, Any] | None,
    timings: dict[str, float],
) -> dict[str, Any]:
    """What summary.md shows, for programs (summary.json): the keys below are a contract (the demo
    and `cxr-rl train`'s closing lines read them)."""
    by_step = {point["step"]: point for point in points}
    chosen = by_step.get(selection["chosen"]["step"], {}) if selection else {}
    summary = {
        "name": config.name,
        "skill_over_baseline": chosen.get("skill_over_baseline"),
        "skill_over_baseline_ci": chosen.get("skill_over_baseline_ci"),
        "best_shortcut": chosen.get("best_shortcut"),
        "distinct_answer_sets": chosen.get("distinct_answer_sets"),
        "validation": [{key: point.get(key) for key in VALIDATION_KEYS} for point in points],
        "grpo_rewards": [
            m["reward_mean"] for m in grpo_metrics if "reward_mean" in m
        ],  # per step, on the RL set
        "early_warnings": [point["early_warning"] for point in points if point.get("early_warning")],
        "selection": selection,
        "report_sets": report["report_sets"] if report else {},
        "final_report": report["summary"] if report else None,
        "notes": ood_report_notes(outcome.inputs) + list(outcome.inputs.notes),
        "timings": timings,
        "wall_s": outcome.wall_s if outcome.wall_s is not None else sum(timings.values()),
    }
    return summary


def unparseable_warning(points: list[dict[str, Any]], threshold: float = 0.5) -> str | None:
    """Scores mean little when most answers could not be parsed: say so beside them."""
    last = max(points, key=lambda p: p["step"])
    if last.get("id_fail_rate", 0.0) < threshold:
        return None
    return (
        f"{last['id_fail_rate']:.0%} of the validation answers at step {last['step']} broke the answer "
        "format (see parse_status in evaluation/steps/); the F1 figures above reflect that, not the "
        "model's reading of the images. More SFT usually fixes it."
    )
