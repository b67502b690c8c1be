"""The driver: connect to a running Ray cluster, place the rollout replicas, the reward worker and
the trainer as actors, run SFT then GRPO with evaluation every K steps, write everything of the run
into its folder, and shut every actor down on exit or Ctrl-C. `cxr-rl train` (deploy/commands.py)
reads the command line and calls `train`.

    ray start --head
    cxr-rl train --config deploy/configs/default.yaml
"""

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import ray
from tqdm import tqdm

from deploy.config import RunConfig
from deploy.embedded import RunInputs, prepare_inputs
from deploy.final_report import final_report
from deploy.memory.plan import require_fit
from deploy.observability import RunMetrics, evaluation_curve, read_metrics, training_plots
from deploy.placement import Placement
from deploy.run_outcome import RunOutcome
from deploy.run_summary import write_run_summary
from deploy.validation import TrainingValidation
from evaluation.runner import UnreachableServer
from shared.config import load_config
from shared.schemas import AdapterSelector

log = logging.getLogger("cxr_rl.driver")
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"


def setup_logging(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers = [logging.FileHandler(run_dir / "driver.log"), logging.StreamHandler(sys.stderr)]
    root = logging.getLogger("cxr_rl")
    root.setLevel(logging.INFO)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    handlers[1].setLevel(logging.WARNING)  # the console shows progress bars; details go to the log


def run_sft(placement: Placement, config: RunConfig, inputs: RunInputs, run_dir: Path, resume: bool) -> Path:
    out = run_dir / "sft"
    adapter = out / "adapter"
    if resume and (out / "sft_summary.json").is_file() and (adapter / "adapter_config.json").is_file():
        log.info("SFT already done in %s; reusing its adapter", out)
        return adapter
    sft_config = config.sft_config(str(inputs.model), inputs.sft_manifest, out)
    sft_config = sft_config.model_copy(update={"progress": False})
    started = time.perf_counter()
    pending = placement.trainer.run_sft.remote(sft_config, resume)
    metrics_file, seen = out / "metrics.jsonl", 0
    with tqdm(desc="SFT", unit="step") as bar:
        while True:
            done, _ = ray.wait([pending], timeout=1.0)
            lines = metrics_file.read_text().splitlines() if metrics_file.is_file() else []
            steps = [json.loads(line) for line in lines[seen:] if line.strip().startswith("{")]
            seen = len(lines)
            for entry in steps:
                if entry.get("total_steps") and bar.total is None:  # SFT's first line: a total, so an ETA
                    bar.total = entry["total_steps"]
                    bar.refresh()
                if entry.get("kind") == "step":
                    bar.update(1)
                    bar.set_postfix(loss=f"{entry.get('loss', float('nan')):.3f}")
            if done:
                summary = ray.get(pending)
                break
    log.info(
        "SFT finished in %.0f s: %s",
        time.perf_counter() - started,
        {k: summary[k] for k in ("best_epoch", "best_val_loss", "stop_reason")},
    )
    return Path(summary["adapter"])


def run_grpo(
    placement: Placement,
    config: RunConfig,
    inputs: RunInputs,
    run_dir: Path,
    sft_adapter: Path | None,
    resume: bool,
) -> RunOutcome:
    grpo_config = config.grpo_config(str(inputs.model), inputs.rl_manifest, sft_adapter)
    urls = placement.replica_urls()
    log.info("rollout replicas ready at %s", ", ".join(urls))
    state = ray.get(
        placement.trainer.setup_grpo.remote(
            grpo_config,
            str(run_dir / "grpo"),
            placement.rollout_replicas(),
            placement.router,
            resume,
            api_token=placement.api_token,
        )
    )
    step = state["step"]
    metrics = RunMetrics(run_dir, resume_from_step=step if resume else None)
    validation = TrainingValidation(
        run_dir,
        config.evaluation,
        inputs.val_manifest,
        inputs.ood_val_manifest,
        inputs.ood_label_set,
        grpo_config.prompt_format,
        train_manifest=inputs.rl_manifest,
    )
    validation.token = placement.api_token
    checkpoint_dir = run_dir / "grpo" / "checkpoints"

    def evaluate(at_step: int) -> None:
        nonlocal urls
        if not validation.enabled:
            return
        adapter_folder = checkpoint_dir / f"step-{at_step:06d}" / "adapter" if at_step else sft_adapter
        adapter = AdapterSelector(name=grpo_config.adapter_name, version=at_step)
        try:
            point = validation.evaluate(urls[0], at_step, adapter, adapter_folder)
        except UnreachableServer as error:  # a replica died between steps: bring it back, retry once
            log.warning("validation at step %d: %s; recovering the replicas", at_step, error)
            for event in ray.get(placement.trainer.recover_replicas.remote()):
                log.warning(event)
            urls = placement.replica_urls()
            point = validation.evaluate(urls[0], at_step, adapter, adapter_folder)
        metrics.log("eval", at_step, point)

    if not any(point["step"] == step for point in validation.points):
        evaluate(step)
    worker = placement.reward_worker_identity()
    with tqdm(total=grpo_config.max_steps, initial=step, desc="GRPO", unit="step") as bar:
        while step < grpo_config.max_steps:
            values = ray.get(placement.trainer.grpo_step.remote())
            step = values["step"]
            for event in values.pop("events", []):
                log.warning(event)
            now = placement.reward_worker_identity()
            if now != worker:
                log.warning(
                    "reward worker changed: %s -> %s (restarted or swapped); the step was scored once",
                    worker,
                    now,
                )
                worker = now
            metrics.log("grpo", step, values)
            bar.update(1)
            bar.set_postfix(reward=f"{values['reward_mean']:.3f}", kl=f"{values['kl']:.3g}")
            every = config.evaluation.every
            if (every and step % every == 0) or step == grpo_config.max_steps:
                urls = placement.replica_urls()  # a replica restarted during the step has a new port
                evaluate(step)
    metrics.close()
    return RunOutcome(grpo_config, validation, step, inputs, urls, api_token=placement.api_token)


def finish(
    run_dir: Path, config: RunConfig, outcome: RunOutcome, timings: dict[str, float], started: float
) -> None:
    grpo_metrics = read_metrics(run_dir / "metrics.jsonl", "grpo")
    plots = training_plots(grpo_metrics, run_dir / "plots")
    validation = outcome.validation
    curve = evaluation_curve(
        sorted(validation.points, key=lambda p: p["step"]), run_dir / "plots" / "validation_macro_f1.png"
    )
    selection = validation.selection()
    inputs = outcome.inputs  # report sets only: the selection sets are never re-scored
    report = final_report(run_dir, outcome, selection, inputs.report_sets, inputs.rl_manifest)
    outcome.wall_s = time.perf_counter() - started
    write_run_summary(
        run_dir, config, outcome, grpo_metrics, selection, report, timings, plots + ([curve] if curve else [])
    )


def train(config: RunConfig, resume: bool = False, address: str = "auto") -> Path:
    run_dir = config.run_dir
    setup_logging(run_dir)
    (run_dir / "run_config.json").write_text(config.model_dump_json(indent=2))
    timings: dict[str, float] = {}
    started = time.perf_counter()
    inputs = prepare_inputs(config, run_dir)
    if config.gpu is not None:  # the split the run is about to use must fit, or nothing starts
        for line in require_fit(config, inputs.model).split.describe():
            log.info("GPU budget: %s", line)
    timings["prepare_s"] = time.perf_counter() - started
    with Placement.connect(config, inputs.model, address) as placement:
        # The trainer first: placing it is cheap (no model yet), a cluster without its resources
        # fails at once, and its CUDA context exists before vLLM measures free memory.
        placement.start_trainer()
        placement.start_replicas()  # engines load while SFT runs (CPU)
        if config.gpu is not None:
            # vLLM sizes its KV cache from the free GPU memory it measures at start-up; a trainer
            # loading weights meanwhile would be counted as vLLM's own. Let the engines settle first.
            placement.replica_urls()
        (run_dir / "placement.json").write_text(json.dumps(placement.nodes, indent=2))
        log.info("placed on Ray nodes: %s", placement.nodes)
        placement.start_reward_router()
        sft_adapter = None
        if config.sft is not None:
            phase = time.perf_counter()
            sft_adapter = run_sft(placement, config, inputs, run_dir, resume)
            timings["sft_s"] = time.perf_counter() - phase
        phase = time.perf_counter()
        outcome = run_grpo(placement, config, inputs, run_dir, sft_adapter, resume)
        timings["grpo_s"] = time.perf_counter() - phase
        phase = time.perf_counter()
        outcome.urls = placement.replica_urls()  # current even if a replica restarted at the end
        finish(run_dir, config, outcome, timings, started)
        timings["report_s"] = time.perf_counter() - phase
    timings["total_s"] = time.perf_counter() - started
    log.info("run finished in %.0f s; everything is in %s", timings["total_s"], run_dir)
    return run_dir


def load_run_config(path: str | None, overrides: dict[str, Any]) -> RunConfig:
    return load_config(path or DEFAULT_CONFIG, RunConfig, overrides=overrides)
