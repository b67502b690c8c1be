"""What a run leaves behind: metrics per step (JSONL and TensorBoard), training plots like the
paper's figures (raw values faint, an EMA with smoothing 0.95 bold; across a live reward swap the
EMA restarts and the swap is marked), and the evaluation curves."""

import json
import math
from dataclasses import dataclass
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
        # tensorboard takes a second to import: only once a run logs
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


@dataclass(frozen=True, slots=True)
class RewardSegment:
    """Consecutive GRPO steps scored by one reward (name and version): `metrics[start:stop]`."""

    start: int
    stop: int
    name: str
    version: str


def reward_segments(metrics: list[dict[str, Any]]) -> list[RewardSegment]:
    """Split the steps where the reward changed (`cxr-rl reward swap`, or a new reward config)."""
    segments: list[RewardSegment] = []
    for index, entry in enumerate(metrics):
        key = (str(entry.get("reward_name", "")), str(entry.get("reward_version", "")))
        if segments and (segments[-1].name, segments[-1].version) == key:
            segments[-1] = RewardSegment(segments[-1].start, index + 1, *key)
        else:
            segments.append(RewardSegment(index, index + 1, *key))
    return segments


def _plot_series(
    axis: Any,
    steps: list[int],
    values: list[float],
    spans: list[tuple[int, int]],
    label: str,
    color: str,
) -> None:
    """Raw values faint and their EMA bold, the EMA started afresh in each span of steps."""
    legend = True
    for start, stop in spans:
        points = [
            (x, y) for x, y in zip(steps[start:stop], values[start:stop], strict=True) if math.isfinite(y)
        ]
        if not points:
            continue
        xs, ys = [x for x, _ in points], [y for _, y in points]
        axis.plot(xs, ys, color=color, alpha=0.25, linewidth=1, label="_raw")
        name = f"{label} (EMA {EMA_SMOOTHING})"
        axis.plot(xs, ema(ys), color=color, linewidth=2.2, label=name if legend else "_" + name)
        legend = False


def _mark_swaps(axis: Any, steps: list[int], segments: list[RewardSegment]) -> None:
    """A dashed line between the last step of one reward and the first of the next, and each
    reward's name and version where its steps begin."""
    for previous, segment in zip([None, *segments], segments, strict=False):
        if previous is not None:
            middle = (steps[previous.stop - 1] + steps[segment.start]) / 2
            axis.axvline(middle, color="0.35", linestyle="--", linewidth=1, gid="reward-swap")
        if segment.name:
            axis.text(
                steps[segment.start], 0.98, f" {segment.name} {segment.version}".rstrip(),
                transform=axis.get_xaxis_transform(), fontsize=7, va="top", ha="left", color="0.25",
            )  # fmt: skip


def _figure(
    title_series: list[tuple[str, list[tuple[str, str]]]],
    metrics: list[dict[str, Any]],
    segments: list[RewardSegment],
    restart: bool,
) -> Any:
    # matplotlib only once plots are drawn (the driver imports this module at start)
    import matplotlib.pyplot as plt

    steps = [entry["step"] for entry in metrics]
    spans = [(s.start, s.stop) for s in segments] if restart else [(0, len(metrics))]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    figure, axes = plt.subplots(len(title_series), 1, figsize=(7, 4 * len(title_series)), squeeze=False)
    for axis, (title, series) in zip(axes[:, 0], title_series, strict=True):
        for index, (key, label) in enumerate(series):
            values = [float(entry.get(key, float("nan"))) for entry in metrics]
            _plot_series(axis, steps, values, spans, label, colours[index % len(colours)])
        _mark_swaps(axis, steps, segments)
        axis.set_title(title)
        axis.set_xlabel("GRPO step")
        axis.grid(alpha=0.3)
        if series:
            axis.legend(fontsize=8, loc="best")
    figure.tight_layout()
    return figure


def training_figures(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """The training plots as matplotlib figures, by file name. Reward plots restart their EMA at
    each reward swap, and every plot marks the swaps with the new reward's name and version."""
    # matplotlib only once plots are drawn (the driver imports this module at start)
    import matplotlib

    matplotlib.use("Agg")
    if not metrics:
        return {}
    segments = reward_segments(metrics)
    components = sorted({key for entry in metrics for key in entry if key.startswith("reward/")})
    reward = [
        ("Reward as the reward reports it", [("reward_mean", "mean reward")]),
        ("Reward x its scale (what the advantages see)", [("reward_scaled_mean", "mean scaled reward")]),
    ]
    parts = [("Reward components", [(key, key.split("/", 1)[1]) for key in components])]
    length = [("Completion length (tokens)", [("completion_len_mean", "mean length")])]
    return {
        "reward.png": _figure(reward, metrics, segments, restart=True),
        "reward_components.png": _figure(parts, metrics, segments, restart=True),
        "completion_length.png": _figure(length, metrics, segments, restart=False),
    }


def training_plots(metrics: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """reward.png, reward_components.png, completion_length.png from GRPO step metrics."""
    # matplotlib only once plots are drawn (the driver imports this module at start)
    import matplotlib.pyplot as plt

    figures = training_figures(metrics)
    if figures:
        out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, figure in figures.items():
        figure.savefig(out_dir / file_name, dpi=120)
        plt.close(figure)
        written.append(out_dir / file_name)
    return written


def evaluation_curve(points: list[dict[str, Any]], out_path: Path) -> Path | None:
    """In-distribution and out-of-distribution macro-F1 over GRPO steps, on one chart."""
    # matplotlib only once plots are drawn (the driver imports this module at start)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after the backend is chosen

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
            ys = [v if v is not None else float("nan") for v in values]
            axis.plot(steps, ys, marker=marker, label=label)
            intervals = [point.get(key.replace("macro_f1", "ci")) for point in points]
            if all(intervals):  # each step's 95% bootstrap interval, shaded
                axis.fill_between(steps, [ci[0] for ci in intervals], [ci[1] for ci in intervals], alpha=0.15)
    axis.set_title("Validation macro-F1 during GRPO (selection sets, 95% intervals)")
    axis.set_xlabel("GRPO step (0 = SFT checkpoint)")
    axis.set_ylabel("macro-F1")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path, dpi=120)
    plt.close(figure)
    return out_path
