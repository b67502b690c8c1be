"""The end-of-run report: the SFT checkpoint, the selected GRPO checkpoint and the final one side by
side on the validation and OOD sets, with paired-bootstrap changes relative to SFT (the paper's
question: did RL help in distribution, and what did it cost out of distribution?)."""

import logging
from pathlib import Path
from typing import Any

from rollout_server.client import RolloutClient

log = logging.getLogger("cxr_rl.driver")


def final_report(run_dir: Path, outcome: dict[str, Any], selection: dict[str, Any]) -> dict[str, Any]:
    from evaluation.runner import evaluate_checkpoints, load_adapter_folder

    validation = outcome["validation"]
    points = {point["step"]: point for point in validation.points}
    chosen_step = selection["chosen"]["step"]
    wanted = {"sft": 0, "selected": chosen_step, "final": outcome["final_step"]}
    labels: dict[int, str] = {}
    for label, step in wanted.items():  # one adapter per distinct step
        labels.setdefault(step, label)
    # Adapter loads are admin calls: the run's own API token, when the driver gave its replicas one.
    with RolloutClient(outcome["urls"][0], token=outcome.get("api_token")) as client:
        selectors = [
            load_adapter_folder(client, label, points[step]["adapter"])
            for step, label in labels.items()
            if points.get(step, {}).get("adapter")
        ]
        evaluated = evaluate_checkpoints(client, validation.datasets, selectors, validation.eval_settings())
        folder = run_dir / "evaluation" / "final"
        files = evaluated.write_report(
            folder, evaluated.report_config(baseline_checkpoint=evaluated.checkpoints[0])
        )
        for selector in selectors:
            client.unload_adapter(selector.name)
    log.info("final report in %s", folder)
    return {
        "folder": str(folder),
        "files": {key: str(value) for key, value in vars(files).items()}
        if hasattr(files, "__dict__")
        else str(files),
        "checkpoints": {label: step for step, label in labels.items()},
        "summary": evaluated.summary(),
    }
