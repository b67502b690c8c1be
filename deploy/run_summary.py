"""`summary.md`: one page that says what the run did: final metrics, the validation curve's points,
which checkpoint was chosen and what the other rules would have chosen, versions, timings, config."""

import json
from pathlib import Path
from typing import Any

from deploy.config import RunConfig

HEADLINE = ("reward_mean", "reward_std", "kl", "entropy", "completion_len_mean", "clip_low_frac", "clip_high_frac",
            "zero_variance_groups", "logprob_diff_max", "grad_norm")  # fmt: skip
TIME_SPLIT = ("rollout_s", "reward_s", "train_s", "sync_s", "checkpoint_s", "step_s")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_run_summary(
    run_dir: Path,
    config: RunConfig,
    outcome: dict[str, Any],
    grpo_metrics: list[dict[str, Any]],
    selection: dict[str, Any],
    report: dict[str, Any] | None,
    timings: dict[str, float],
    plots: list[Path],
) -> Path:
    lines = [f"# Run `{config.name}`", ""]
    grpo_config = outcome["grpo_config"]
    lines += [
        f"- model: `{grpo_config.model}`; SFT adapter: `{grpo_config.sft_adapter}`",
        f"- GRPO steps: {outcome['final_step']} of {grpo_config.max_steps}; adapter `{grpo_config.adapter_name}` "
        f"versions 0..{outcome['final_step']} published to {config.rollout.replicas} replica(s)",
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
    points = sorted(outcome["validation"].points, key=lambda p: p["step"])
    if points:
        lines += [
            "",
            "## Validation during GRPO",
            "",
            "| step | ID macro-F1 | OOD macro-F1 | ID fail rate |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {p['step']} | {p['id_macro_f1']:.3f} | {_fmt(p.get('ood_macro_f1', '-'))} | {p['id_fail_rate']:.2f} |"
            for p in points
        ]
        warnings = [p["early_warning"] for p in points if p.get("early_warning")]
        lines += [f"- **early warning**: {warning}" for warning in warnings]
        unparseable = unparseable_warning(points)
        if unparseable:
            lines += [f"- **warning**: {unparseable}"]
    if selection:
        chosen = selection["chosen"]
        lines += [
            "",
            "## Checkpoint selection",
            "",
            f"Rule `{selection['rule']}` chose step **{chosen['step']}**.",
            "",
        ]
        lines += ["| rule | step | ID macro-F1 | OOD macro-F1 |", "| --- | --- | --- | --- |"]
        lines += [
            f"| {rule} | {p['step']} | {p['id_macro_f1']:.3f} | {p['ood_macro_f1']:.3f} |"
            for rule, p in selection["by_rule"].items()
        ]
    if report:
        lines += [
            "",
            "## Final evaluation",
            "",
            f"Full report: `{Path(report['folder']).relative_to(run_dir)}/report.md`",
            "",
        ]
        scores = report["summary"]["scores"]
        lines += [
            "| checkpoint | dataset | macro-F1 | micro-F1 | fail rate |",
            "| --- | --- | --- | --- | --- |",
        ]
        for checkpoint, datasets in scores.items():
            for dataset, values in datasets.items():
                lines.append(
                    f"| {checkpoint} | {dataset} | {values['macro_f1']:.3f} | {values['micro_f1']:.3f} | {values['fail_rate']:.2f} |"
                )
    lines += ["", "## Timings (s)", "", "| phase | seconds |", "| --- | --- |"]
    lines += [f"| {key.removesuffix('_s')} | {value:.1f} |" for key, value in timings.items()]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{plot.stem}]({plot.relative_to(run_dir)})" for plot in plots]
    lines += ["", "## Config", "", "```json", json.dumps(config.model_dump(mode="json"), indent=2), "```", ""]
    path = run_dir / "summary.md"
    path.write_text("\n".join(lines))
    return path


def unparseable_warning(points: list[dict[str, Any]], threshold: float = 0.5) -> str | None:
    """Scores mean little when most answers could not be parsed: say so beside them."""
    last = max(points, key=lambda p: p["step"])
    if last["id_fail_rate"] < threshold:
        return None
    return (
        f"{last['id_fail_rate']:.0%} of the validation answers at step {last['step']} broke the answer "
        "format (see parse_status in evaluation/final/predictions.jsonl); the F1 figures above reflect "
        "that, not the model's reading of the images. More SFT usually fixes it."
    )
