"""What a run leaves behind: metrics per step (JSONL and TensorBoard), training plots like the
paper's figures (raw values faint, an EMA with smoothing 0.95 bold), and the evaluation curves."""

import json
import math
from pathlib import Path
from typing import Any

from shared.jsonl import JsonlLog

EMA_SMOOTHING = 0.95


class RunMetrics:
    """`metrics.jsonl` (one object per step, flushed) and TensorBoard scalars in `tensorboard/`."""

    def __init__(self, run_dir: Path, resume_from_step: int | None = None):
        self.log_file = JsonlLog(run_dir / "metrics.jsonl")
        if resume_from_step is not None:  # steps a crashed driver logged after its checkpoint are redone
            self.log_file.keep(
                lambda entry: entry.get("phase") != "grpo" or entry.get("step", 0) <= resume_from_step
            )
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, phase: str, step: int, values: dict[str, Any]) -> None:
        self.log_file.append({"phase": phase, "step": step, **values})
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(f"{phase}/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def read_metrics(path: Path, phase: str) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [entry for entry in entries if entry.get("phase") == phase]


def ema(values: list[float], smoothing: float = EMA_SMOOTHING) -> list[float]:
    """TensorBoard's debiased exponential moving average."""
    smoothed, last, weight = [], 0.0, 0.0
    for value in values:
        last = smoothing * last + (1 - smoothing) * value
        weight = smoothing * weight + (1 - smoothing)
        smoothed.append(last / weight)
    return smoothed


def _plot_series(axis: Any, steps: list[int], values: list[float], label: str, color: str) -> None:
    axis.plot(steps, values, color=color, alpha=0.25, linewidth=1)
    axis.plot(steps, ema(values), color=color, linewidth=2.2, label=f"{label} (EMA {EMA_SMOOTHING})")


def training_plots(metrics: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """reward.png, reward_components.png, completion_length.png from GRPO step metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not metrics:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = [entry["step"] for entry in metrics]
    components = sorted({key for entry in metrics for key in entry if key.startswith("reward/")})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    figures = {
        "reward.png": ("Total reward", [("reward_mean", "mean reward")]),
        "reward_components.png": ("Reward components", [(key, key.split("/", 1)[1]) for key in components]),
        "completion_length.png": ("Completion length (tokens)", [("completion_len_mean", "mean length")]),
    }
    written = []
    for file_name, (title, series) in figures.items():
        figure, axis = plt.subplots(figsize=(7, 4))
        for index, (key, label) in enumerate(series):
            values = [float(entry.get(key, float("nan"))) for entry in metrics]
            _plot_series(axis, steps, values, label, colours[index % len(colours)])
        axis.set_title(title)
        axis.set_xlabel("GRPO step")
        axis.grid(alpha=0.3)
        if series:
            axis.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(out_dir / file_name, dpi=120)
        plt.close(figure)
        written.append(out_dir / file_name)
    return written


def evaluation_curve(points: list[dict[str, Any]], out_path: Path) -> Path | None:
    """In-distribution and out-of-distribution macro-F1 over GRPO steps, on one chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not points:
        return None
    figure, axis = plt.subplots(figsize=(7, 4))
    steps = [point["step"] for point in points]
    for key, label, marker in (
        ("id_macro_f1", "in-distribution", "o"),
        ("ood_macro_f1", "out-of-distribution", "s"),
    ):
        values = [point.get(key) for point in points]
        if any(value is not None for value in values):
            axis.plot(
                steps, [v if v is not None else float("nan") for v in values], marker=marker, label=label
            )
    axis.set_title("Validation macro-F1 during GRPO")
    axis.set_xlabel("GRPO step (0 = SFT checkpoint)")
    axis.set_ylabel("macro-F1")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path, dpi=120)
    plt.close(figure)
    return out_path
