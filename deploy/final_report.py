"""The end-of-run report, on the report sets only: the SFT checkpoint, the step checkpoint selection
chose and the last step, side by side on every report set (each scored on its own label set, in the
layout of the paper's Tables 5 and 6), with the ID-vs-OOD summary and paired-bootstrap changes
relative to SFT: did RL help in distribution, and what did it cost out of distribution?

The selection sets that chose the step are never re-scored here: a step chosen on some images
scores above its worth on those images, by the luck of the choice."""

import logging
from pathlib import Path
from typing import Any

from deploy.config import ReportSet
from deploy.run_outcome import RunOutcome
from evaluation.datasets import EvalDataset
from evaluation.outcome import EvaluationOutcome
from evaluation.runner import evaluate_checkpoints, load_adapter_folder
from rollout_server.client import RolloutClient

log = logging.getLogger("cxr_rl.driver")


def checkpoint_labels(chosen_step: int | None, final_step: int) -> dict[int, str]:
    """Step -> its column in the report; a step in two roles gets one column naming both."""
    roles: dict[int, list[str]] = {0: ["SFT"]}
    if chosen_step is not None:
        roles.setdefault(chosen_step, []).append("chosen")
    roles.setdefault(final_step, []).append("last")
    return {step: f"{' = '.join(names)} (step {step})" for step, names in roles.items()}


def relabel(outcome: EvaluationOutcome, names: dict[str, str]) -> EvaluationOutcome:
    """The outcome with its checkpoints renamed (server names -> report columns)."""
    records = {
        names[checkpoint]: {
            dataset: [record.model_copy(update={"checkpoint": names[checkpoint]}) for record in rows]
            for dataset, rows in by_dataset.items()
        }
        for checkpoint, by_dataset in outcome.records.items()
    }
    baselines = {
        dataset: baseline.model_copy(
            update={"blank_images": {names[c]: blank for c, blank in baseline.blank_images.items()}}
        )
        for dataset, baseline in outcome.baselines.items()
    }
    return EvaluationOutcome.from_records(
        records,
        outcome.datasets,
        outcome.in_distribution,
        outcome.out_of_distribution,
        baselines,
        outcome.timing,
    )


def final_report(
    run_dir: Path,
    outcome: RunOutcome,
    selection: dict[str, Any],
    report_sets: list[ReportSet],
    train_manifest: Path | None,
) -> dict[str, Any] | None:
    """Score SFT, the chosen step and the last step on the report sets; None without report sets."""
    if not report_sets:
        log.info("no report sets: no final report")
        return None
    validation = outcome.validation
    points = {point["step"]: point for point in validation.points}
    chosen_step = selection["chosen"]["step"] if selection else None
    labels = checkpoint_labels(chosen_step, outcome.final_step)
    datasets = {
        report.name: EvalDataset(manifest=Path(report.manifest), label_set=report.label_set)
        for report in report_sets
    }
    base = validation.eval_settings()
    settings = base.model_copy(
        update={
            "in_distribution": [r.name for r in report_sets if r.role == "in_distribution"],
            "out_of_distribution": [r.name for r in report_sets if r.role == "out_of_distribution"],
            "train_manifest": train_manifest,
        }
    )
    if not settings.in_distribution:  # the runner needs one set to call in distribution
        settings = settings.model_copy(update={"in_distribution": [report_sets[0].name]})
    # Adapter loads are admin calls: the run's own API token, when the driver gave its replicas one.
    with RolloutClient(outcome.urls[0], token=outcome.api_token) as client:
        selectors = {
            f"final-step-{step}": load_adapter_folder(client, f"final-step-{step}", points[step]["adapter"])
            for step in labels
            if points.get(step, {}).get("adapter")
        }
        evaluated = evaluate_checkpoints(client, datasets, list(selectors.values()), settings)
        for selector in selectors.values():
            client.unload_adapter(selector.name)
    names = {
        checkpoint: labels[int(checkpoint.split(":")[0].removeprefix("final-step-"))]
        for checkpoint in evaluated.checkpoints
    }
    evaluated = relabel(evaluated, names)
    folder = run_dir / "evaluation" / "final"
    baseline = labels[0] if labels[0] in evaluated.checkpoints else evaluated.checkpoints[0]
    files = evaluated.write_report(
        folder,
        evaluated.report_config(
            baseline_checkpoint=baseline, n_resamples=validation.settings.bootstrap_resamples
        ),
    )
    log.info("final report in %s", folder)
    return {
        "folder": str(folder),
        "files": {key: str(value) for key, value in vars(files).items()},
        "checkpoints": {label: step for step, label in labels.items()},
        "report_sets": {r.name: {"role": r.role, "manifest": str(r.manifest)} for r in report_sets},
        "summary": evaluated.summary(),
    }
